// attnkit::Error: the one exception type native code throws. `code` is the stable suffix of the JS
// error code (ERR_ATTNKIT_<code>); the N-API boundary (native/napi) is the only place that turns it
// into a JavaScript AttnkitError.
#pragma once
#include <stdexcept>
#include <string>

namespace attnkit {

class Error : public std::runtime_error {
 public:
  Error(std::string code, std::string op, const std::string& message)
      : std::runtime_error(message), code_(std::move(code)), op_(std::move(op)) {}
  const std::string& code() const { return code_; }
  const std::string& op() const { return op_; }

 private:
  std::string code_, op_;
};

}  // namespace attnkit
