/**
 * Build hygiene, checked from the source tree: the cmake-js and node-gyp builds compile the same CPU
 * sources; only the binding includes napi.h (STYLE: plain params structs below the binding); inline
 * PTX lives in native/cuda/ptx.cuh alone (DESIGN §7); and what the built addon exports.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const STUB = 'native/cuda/runtime_stub.cc';

/** Every file under `dir` (relative to the repository root, forward slashes). */
function walk(dir: string): string[] {
  const out: string[] = [];
  for (const e of readdirSync(join(root, dir), { withFileTypes: true })) {
    const p = `${dir}/${e.name}`;
    if (e.isDirectory()) out.push(...walk(p));
    else out.push(p);
  }
  return out;
}

/** Source text without // and /* *\/ comments (so that prose about asm() or napi.h is not code). */
function code(path: string): string {
  return readFileSync(join(root, path), 'utf8')
    .replace(/\/\*[\s\S]*?\*\//g, '')
    .replace(/\/\/.*$/gm, '');
}

function cmakeCpuSources(): string[] {
  const text = readFileSync(join(root, 'CMakeLists.txt'), 'utf8');
  const m = /set\(\s*ATTNKIT_CPU_SOURCES\s+([^)]*)\)/.exec(text);
  if (!m) throw new Error('CMakeLists.txt: set(ATTNKIT_CPU_SOURCES ...) not found');
  return m[1]!
    .split(/\s+/)
    .filter((s) => s.length > 0 && !s.startsWith('#'));
}

function gypSources(): string[] {
  // binding.gyp is a Python literal; with its # comments removed this one is also JSON.
  const text = readFileSync(join(root, 'binding.gyp'), 'utf8').replace(/^\s*#.*$/gm, '');
  const gyp = JSON.parse(text) as { targets: { target_name: string; sources: string[] }[] };
  const target = gyp.targets.find((t) => t.target_name === 'attnkit');
  if (!target) throw new Error("binding.gyp: target 'attnkit' not found");
  return target.sources;
}

const ccIn = (dir: string) =>
  existsSync(join(root, dir)) ? walk(dir).filter((f) => f.endsWith('.cc') && dirname(f) === dir) : [];

describe('source lists', () => {
  it('CMakeLists.txt ATTNKIT_CPU_SOURCES equals the binding.gyp sources minus the CUDA stub', () => {
    const cmake = cmakeCpuSources();
    const gyp = gypSources();
    expect(gyp).toContain(STUB);
    expect([...cmake].sort()).toEqual(gyp.filter((s) => s !== STUB).sort());
    expect(new Set(cmake).size).toBe(cmake.length);
    expect(new Set(gyp).size).toBe(gyp.length);
  });

  it('every native/cpu/*.cc and native/napi/*.cc is compiled by both builds', () => {
    const cmake = new Set(cmakeCpuSources());
    const gyp = new Set(gypSources());
    const files = [...ccIn('native/cpu'), ...ccIn('native/napi'), ...ccIn('native/ops'), ...ccIn('native/runtime')];
    expect(files.length).toBeGreaterThan(0);
    for (const f of files) {
      expect(cmake.has(f), `${f} missing from ATTNKIT_CPU_SOURCES in CMakeLists.txt`).toBe(true);
      expect(gyp.has(f), `${f} missing from binding.gyp sources`).toBe(true);
    }
  });

  it('every listed source exists', () => {
    for (const f of [...cmakeCpuSources(), ...gypSources()]) expect(existsSync(join(root, f)), f).toBe(true);
  });
});

describe('layering', () => {
  const sources = walk('native').filter((f) => /\.(h|hpp|cc|cpp|cu|cuh|inc)$/.test(f));

  it('only native/napi/ includes napi.h', () => {
    const offenders = sources.filter(
      (f) => !f.startsWith('native/napi/') && /#\s*include\s*[<"]napi\.h[>"]/.test(code(f)),
    );
    expect(offenders).toEqual([]);
  });

  // The includes of a file, as paths relative to native/ (resolved from the including file).
  const includes = (f: string): string[] =>
    [...code(f).matchAll(/#\s*include\s*"([^"]+)"/g)].map((m) => {
      const rel = join(dirname(f), m[1]!);
      return rel.startsWith('native/') ? rel : join('native', m[1]!);
    });
  const inDir = (d: string) => sources.filter((f) => f.startsWith(`native/${d}/`));
  const reaching = (files: string[], d: string) => files.flatMap((f) => includes(f).filter((i) => i.startsWith(`native/${d}/`)).map((i) => `${f} -> ${i}`));

  it('the runtime core includes neither backend, and neither backend includes the other', () => {
    expect(reaching(inDir('runtime'), 'cpu')).toEqual([]);
    expect(reaching(inDir('runtime'), 'cuda')).toEqual([]);
    expect(reaching(inDir('cuda'), 'cpu')).toEqual([]);
    expect(reaching(inDir('cpu'), 'cuda')).toEqual([]);
  });

  it('the binding picks no backend: op files reach the kernels only through native/ops/ (the backend table)', () => {
    // cuda.cc binds the CUDA runtime's own functions (copies, events, device pointers); addon.cc's
    // module functions report what each backend is (info, the ISA switch); neighborhood.cc's
    // planner and probes are host-side test hooks of the policy.
    const allowed = new Set(['native/napi/cuda.cc', 'native/napi/addon.cc', 'native/napi/neighborhood.cc', 'native/napi/storage.cc']);
    const ops = inDir('napi').filter((f) => !allowed.has(f));
    expect(reaching(ops, 'cpu')).toEqual([]);
    expect(reaching(ops, 'cuda')).toEqual([]);
    // and no op branches on the stream's backend
    const branches = inDir('napi').filter((f) => /\bcuda_\b|device_stream\(\)|cpu_only\(/.test(code(f)));
    expect(branches).toEqual([]);
  });

  const ptx = 'native/cuda/ptx.cuh';
  it.skipIf(!existsSync(join(root, ptx)))('native/cuda/ptx.cuh is the only file with inline asm', () => {
    // `asm(` / `asm volatile(` anywhere; in CUDA sources also the `__asm__` spelling. (x86 code such as
    // the xgetbv in native/cpu/isa.cc uses `__asm__` and is not PTX.)
    const cudaFile = (f: string) => f.startsWith('native/cuda/') || f.startsWith('native/simt/') || /\.cuh?$/.test(f);
    const offenders = sources.filter((f) => {
      if (f === ptx) return false;
      const text = code(f);
      if (/\basm\s*(volatile\s*)?\(/.test(text)) return true;
      return cudaFile(f) && /__asm__\s*(__volatile__\s*|volatile\s*)?\(/.test(text);
    });
    expect(offenders).toEqual([]);
  });
});

describe('built addon', () => {
  const addon = join(root, 'build', 'Release', 'attnkit.node');
  const nm = spawnSync('nm', ['--version'], { encoding: 'utf8' });
  const canCheck = process.platform === 'linux' && existsSync(addon) && nm.status === 0;

  it.skipIf(!canCheck)('exports only the N-API entry points (native/napi/exports.map)', () => {
    const r = spawnSync('nm', ['-D', '--defined-only', addon], { encoding: 'utf8' });
    expect(r.status).toBe(0);
    const symbols = r.stdout
      .split('\n')
      .map((l) => l.trim().split(/\s+/))
      .filter((p) => p.length === 3)
      .map((p) => p[2]!);
    expect(symbols).toContain('napi_register_module_v1');
    const expected = /^(napi_register_module_v\d+|node_api_module_get_api_version_v\d+)$/;
    expect(symbols.filter((s) => !expected.test(s))).toEqual([]);
  });
});
