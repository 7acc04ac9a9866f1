/**
 * What a shipped attnkit.node may depend on, and the readelf/objdump checks that enforce it. Used
 * by scripts/prebuild.mjs (before a prebuild is written) and test/package.test.ts (CI).
 *
 *   node scripts/binary-check.mjs FILE [--release]   prints the report, exits 1 on a violation
 */
import { execFileSync } from 'node:child_process';
import { statSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

/** The CUDA architectures of a release prebuild (CMake syntax): SASS for sm_80/86/89/90, PTX for compute_80. */
export const RELEASE_CUDA_ARCHS = '80-real;86-real;89-real;90-real;80-virtual';

/**
 * The newest GLIBC symbol version a linux-x64 prebuild may require. 2.34 is what a build on this
 * project's build image (Debian 12, glibc 2.36, GCC 12) needs: glibc 2.34 moved the pthread, dl*
 * and sem_* functions into libc.so.6 under new versions, and everything linked against it picks
 * them up. Distributions that meet it: Debian 12, Ubuntu 22.04, RHEL/Rocky/Alma 9, Fedora 35,
 * Amazon Linux 2023. Lowering it means building on an older image (docs/install.md).
 */
export const GLIBC_FLOOR = '2.34';

/**
 * How the CMake build links on Linux (scripts/build-native.mjs and scripts/prebuild.mjs pass it as
 * CMAKE_SHARED_LINKER_FLAGS). libstdc++ goes inside the binary: linked dynamically, GCC 12 makes it
 * need GLIBCXX_3.4.30 (std::condition_variable::wait), which e.g. RHEL 9's libstdc++ lacks. Every
 * C++ symbol stays local (native/napi/exports.map), so the static copy cannot clash with Node's.
 * --gc-sections drops the parts of libstdc++.a nothing calls; without it std::random_device comes
 * along and needs arc4random@GLIBC_2.36. libgcc stays shared: its static unwinder would need
 * _dl_find_object@GLIBC_2.35, and libgcc_s.so.1 is on every glibc system.
 */
export const LINUX_LINK_FLAGS = '-static-libstdc++ -Wl,--gc-sections';

/** Libraries the addon must never need at load time (cudart is static; libcuda is dlopened by cudart). */
export const FORBIDDEN_NEEDED = /^lib(cudart|cuda|cublas|cublasLt|nvrtc|cudnn)\b/;

/** Compare dotted versions numerically: negative, 0 or positive. */
export function compareVersions(a, b) {
  const x = a.split('.').map(Number);
  const y = b.split('.').map(Number);
  for (let i = 0; i < Math.max(x.length, y.length); i++) {
    const d = (x[i] ?? 0) - (y[i] ?? 0);
    if (d !== 0) return d;
  }
  return 0;
}

function maxVersion(text, prefix) {
  const re = new RegExp(`\\b${prefix}_([0-9]+(?:\\.[0-9]+)*)\\b`, 'g');
  let best = null;
  for (const m of text.matchAll(re)) if (best === null || compareVersions(m[1], best) > 0) best = m[1];
  return best;
}

/**
 * DT_NEEDED entries (readelf -d) and the newest GLIBC / GLIBCXX / CXXABI versions among the
 * dynamic symbols it imports (objdump -T). Needs binutils.
 */
export function inspectElf(file) {
  const dyn = execFileSync('readelf', ['-d', '-W', file], { encoding: 'utf8' });
  const needed = [...dyn.matchAll(/\(NEEDED\)\s+Shared library: \[([^\]]+)\]/g)].map((m) => m[1]);
  const syms = execFileSync('objdump', ['-T', '-w', file], { encoding: 'utf8', maxBuffer: 64 << 20 });
  const imported = syms.split('\n').filter((l) => l.includes('*UND*')).join('\n');
  const sections = execFileSync('readelf', ['-S', '-W', file], { encoding: 'utf8' });
  return {
    file,
    bytes: statSync(file).size,
    needed,
    glibc: maxVersion(imported, 'GLIBC'),
    glibcxx: maxVersion(imported, 'GLIBCXX'),
    cxxabi: maxVersion(imported, 'CXXABI'),
    cudaFatbin: /\s\.nv_fatbin\s/.test(sections),
    stripped: !/\s\.symtab\s/.test(sections),
  };
}

/**
 * The violations of the shipping rules in a report. A release prebuild must also be stripped and
 * must not need libstdc++ (LINUX_LINK_FLAGS: the build machine's GCC sets no GLIBCXX floor).
 */
export function violations(report, { release = false } = {}) {
  const out = [];
  for (const lib of report.needed) if (FORBIDDEN_NEEDED.test(lib)) out.push(`DT_NEEDED has ${lib}`);
  if (report.glibc && compareVersions(report.glibc, GLIBC_FLOOR) > 0)
    out.push(`needs GLIBC_${report.glibc}, newer than the floor GLIBC_${GLIBC_FLOOR}`);
  if (release) {
    if (!report.stripped) out.push('not stripped (.symtab present)');
    if (report.needed.some((l) => l.startsWith('libstdc++'))) out.push('needs libstdc++.so (linked without LINUX_LINK_FLAGS)');
  }
  return out;
}

export function formatReport(r) {
  const mib = (r.bytes / (1 << 20)).toFixed(2);
  return [
    `${r.file}`,
    `  size      ${r.bytes} bytes (${mib} MiB)${r.stripped ? ', stripped' : ''}`,
    `  NEEDED    ${r.needed.join(', ')}`,
    `  GLIBC     ${r.glibc ?? '-'} (floor ${GLIBC_FLOOR})`,
    `  GLIBCXX   ${r.glibcxx ?? '- (libstdc++ not imported)'}${r.cxxabi ? `, CXXABI ${r.cxxabi}` : ''}`,
    `  CUDA code ${r.cudaFatbin ? 'yes (.nv_fatbin)' : 'no'}`,
  ].join('\n');
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const file = process.argv[2];
  if (!file) {
    console.error('usage: node scripts/binary-check.mjs FILE [--release]');
    process.exit(2);
  }
  const r = inspectElf(file);
  console.log(formatReport(r));
  const v = violations(r, { release: process.argv.includes('--release') });
  for (const msg of v) console.error(`violation: ${msg}`);
  process.exit(v.length ? 1 : 0);
}
