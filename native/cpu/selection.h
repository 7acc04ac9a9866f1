// CPU entry points of the run-time block selection ops.
#pragma once
#include "attnkit/selection.h"

namespace attnkit::cpu {

void moba_select(const MobaParams& p);
void xattention_select(const XattnParams& p);

}  // namespace attnkit::cpu
