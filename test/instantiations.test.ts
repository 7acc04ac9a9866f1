/**
 * The one list of CUDA kernel instantiations (native/cuda/instantiations.json; format in
 * docs/cuda-kernels.md) and everything generated from it by scripts/gen-instantiations.mjs:
 *   - the committed outputs are what the generator writes now (`--check`), for every family;
 *   - the list is validated: a bad op name, dtype, head dim, policy or tile is refused, naming the
 *     family or entry;
 *   - every op of the backend table that a kernel family serves is listed once;
 *   - the support table the build was compiled with (native/cuda/generated/supports.h) holds exactly
 *     the list's rows, read from its text, and the built addon answers from it: `native.supports` on
 *     cuda:0 accepts exactly the listed (op, dtype, head dim) combinations, and says what it supports
 *     otherwise; the backend table has a CUDA kernel exactly for the ops with rows; `info()` reports
 *     the listed kernels this build runs.
 * Nothing here needs a GPU; in a build without CUDA the addon's answers are "built without CUDA".
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { DTYPES, info } from '../src/index.ts';
import { native } from '../src/native.ts';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
interface Tile {
  bm: number;
  bn: number;
  warps: number;
}
interface Entry {
  family: string;
  direction: string;
  dtype: string;
  headDim?: number;  // families whose kernels take the head dim at run time have none (support rows say 0)
  policy?: string;
  tile?: Tile;
}
interface Family {
  family: string;
  title: string;
  dir?: string;
  ops: Record<string, string>;
  instantiations: Entry[];
}
interface GenModule {
  readFamilies(path?: string, ops?: Set<string>): Family[];
  readList(path?: string): Entry[];
  backendOps(path?: string): Set<string>;
  generate(families: Family[]): Map<string, string>;
}
const gen = (await import(pathToFileURL(join(root, 'scripts', 'gen-instantiations.mjs')).href)) as GenModule;
const LIST = join(root, 'native', 'cuda', 'instantiations.json');
const families = gen.readFamilies();
const list = families.flatMap((f) => f.instantiations);
const opOf = (e: Entry) => families.find((f) => f.family === e.family)!.ops[e.direction]!;
// The list's dtype names and the public ones (src/dtype.ts).
const PUBLIC: Record<string, keyof typeof DTYPES> = { f32: 'float32', f16: 'float16', bf16: 'bfloat16' };
/** A kernel's name in the support table and the dispatch tables. */
const kernelName = (e: Entry) =>
  e.family === 'fmha' || e.family === 'neighborhood' ? `${e.family} ${e.direction} ${e.policy} ${e.dtype} d${e.headDim}` : `${e.family} ${e.direction} ${e.dtype}${e.headDim ? ` d${e.headDim}` : ''}`;
// Ops of the backend table that are not a kernel family's: tensor plumbing and a test hook.
const RUNTIME_OPS = ['toArray', 'to', 'add', 'randn', 'sleep'];

const tmp = mkdtempSync(join(tmpdir(), 'attnkit-list-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));
let n = 0;
/** Writes a copy of the list with `edit` applied and returns its path. */
function variant(edit: (doc: { families: Record<string, unknown>[] }) => void): string {
  const doc = JSON.parse(readFileSync(LIST, 'utf8')) as { families: Record<string, unknown>[] };
  edit(doc);
  const path = join(tmp, `list-${n++}.json`);
  writeFileSync(path, JSON.stringify(doc));
  return path;
}
const fmhaOf = (doc: { families: Record<string, unknown>[] }) => doc.families.find((f) => f.family === 'fmha')!;
const firstEntry = (doc: { families: Record<string, unknown>[] }) => (fmhaOf(doc).instantiations as Record<string, unknown>[])[0]!;

describe('the one list of CUDA kernel instantiations', () => {
  it('the committed generated files match the list, for every family (gen-instantiations --check)', () => {
    const r = spawnSync(process.execPath, [join(root, 'scripts', 'gen-instantiations.mjs'), '--check'], { cwd: root, encoding: 'utf8' });
    expect(r.status, `${r.stdout}${r.stderr}`).toBe(0);
  });

  it('every op of the backend table that a kernel family serves is listed by exactly one family', () => {
    const served = families.flatMap((f) => Object.values(f.ops));
    expect(new Set(served).size).toBe(served.length);
    const table = native.opTable().map((r) => r.op);
    expect([...served].sort()).toEqual(table.filter((op) => !RUNTIME_OPS.includes(op)).sort());
    expect(families.map((f) => f.family)).toEqual(['fmha', 'neighborhood', 'blockSparse', 'selection', 'merge', 'linear']);
  });

  it('fmha: forward and backward, two dtypes, three head dims, dense, at the default 64 x 64 tile with 4 warps; merge: both directions in three dtypes; the other families none yet', () => {
    const fmha = families.find((f) => f.family === 'fmha')!;
    expect(fmha.ops).toEqual({ fwd: 'attention', bwd: 'attentionBackward' });
    expect(fmha.instantiations).toHaveLength(12);
    for (const e of fmha.instantiations) expect(e.tile).toEqual({ bm: 64, bn: 64, warps: 4 });
    const combos = new Set(fmha.instantiations.map((e) => `${e.direction} ${e.dtype} ${e.headDim} ${e.policy}`));
    expect(combos.size).toBe(12);
    const merge = families.find((f) => f.family === 'merge')!;
    expect(merge.ops).toEqual({ fwd: 'mergeAttention', bwd: 'mergeAttentionBackward' });
    expect(merge.instantiations.map((e) => `${e.direction} ${e.dtype}`).sort()).toEqual(
      ['fwd f32', 'fwd f16', 'fwd bf16', 'bwd f32', 'bwd f16', 'bwd bf16'].sort());
    for (const e of merge.instantiations) expect(e).toEqual({ family: 'merge', direction: e.direction, dtype: e.dtype });
    const selection = families.find((f) => f.family === 'selection')!;
    expect(selection.ops).toEqual({ moba: 'mobaMask', xattention: 'xattentionMask' });
    expect(selection.instantiations.map((e) => `${e.direction} ${e.dtype}`).sort()).toEqual(
      ['moba f32', 'moba f16', 'moba bf16', 'xattention f32', 'xattention f16', 'xattention bf16'].sort());
    // blockSparse: the fmha kernels with the block-sparse policy, both directions, two dtypes, three head dims
    const bs = families.find((f) => f.family === 'blockSparse')!;
    expect(bs.ops).toEqual({ fwd: 'blockSparseAttention', bwd: 'blockSparseAttentionBackward' });
    // (no D = 128 backward: its dK/dV kernel spills with the shared fmha kernels' neighborhood hooks; docs/cuda-kernels.md)
    expect(new Set(bs.instantiations.map((e) => `${e.direction} ${e.dtype} ${e.headDim} ${e.policy}`)).size).toBe(10);
    for (const e of bs.instantiations) expect(e).toMatchObject({ policy: 'blockSparse', tile: { bm: 64, bn: 64, warps: 4 } });
    // neighborhood: ranks 1-3 (policies na1-na3), two dtypes; forward at three head dims, backward at
    // 32 and 64 (docs/cuda-kernels.md: the D = 128 backward does not fit the registers yet)
    const na = families.find((f) => f.family === 'neighborhood')!;
    expect(na.ops).toEqual({ fwd: 'neighborhood', bwd: 'neighborhoodBackward' });
    expect(new Set(na.instantiations.map((e) => `${e.direction} ${e.dtype} ${e.headDim} ${e.policy}`)).size).toBe(30);
    for (const e of na.instantiations) expect(e.tile).toEqual({ bm: 64, bn: 64, warps: 4 });
    const withKernels = ['fmha', 'merge', 'selection', 'blockSparse', 'neighborhood'];
    for (const f of families.filter((x) => !withKernels.includes(x.family))) expect(f.instantiations, f.family).toEqual([]);
  });

  it('blockSparse: a unit per kernel and (dtype, head dim), and the plan kernel; in its CMake list, gate manifest and table', () => {
    const files = gen.generate(families);
    const S = 'native/cuda/block_sparse/generated/';
    const units = [...files.keys()].filter((f) => f.startsWith(S) && f.endsWith('.cu')).sort();
    const want = ['f16', 'bf16'].flatMap((t) => [32, 64, 128].flatMap((d) => (d === 128 ? ['fwd'] : ['fwd', 'prep', 'dkdv', 'dq']).map((k) => `${S}bs_${k}_${t}_d${d}.cu`)));
    expect(units).toEqual([...want, `${S}bs_plan.cu`].sort());
    expect([...files.get(`${S}sources.cmake`)!.matchAll(/(native\/cuda\/block_sparse\/generated\/\S+\.cu)/g)].map((m) => m[1]).sort()).toEqual(units);
    expect(files.get(`${S}sources.cmake`)).toContain('native/cuda/block_sparse/launch.cu');
    const gate = JSON.parse(files.get(`${S}gate.json`)!) as { entries: { file: string; tensorCore?: boolean }[] };
    expect(gate.entries.map((e) => S + e.file).sort()).toEqual(units);
    expect(gate.entries.filter((e) => e.tensorCore).map((e) => S + e.file).sort()).toEqual(units.filter((u) => /bs_(fwd|dkdv|dq)_/.test(u)));
    expect(files.get(`${S}dispatch.h`)).toContain('{DType::BFloat16, 64, "blockSparse bwd bf16 d64", &prep_bf16_d64, &dkdv_bf16_d64, &dq_bf16_d64},');
    expect(files.get('native/cuda/generated/sources.cmake')).toContain('include(${CMAKE_SOURCE_DIR}/native/cuda/block_sparse/generated/sources.cmake)');
  });

  it('one translation unit per kernel, listed for CMake and in the gate manifest; one dispatch row per instantiation', () => {
    const files = gen.generate(families);
    const G = 'native/cuda/fmha/generated/';
    const M = 'native/cuda/merge/generated/';
    const N = 'native/cuda/neighborhood/generated/';
    const mergeUnits = [...files.keys()].filter((f) => f.startsWith(M) && f.endsWith('.cu')).sort();
    const S = 'native/cuda/selection/generated/';
    const units = [...files.keys()].filter((f) => f.endsWith('.cu') && !f.startsWith(M) && !f.startsWith(S) && !f.startsWith('native/cuda/block_sparse/') && !f.startsWith(N)).sort();
    // selection: one unit per kernel (per dtype those reading q and k; the selections, mask lists and scan once)
    const selectionUnits = [...files.keys()].filter((f) => f.startsWith(S) && f.endsWith('.cu')).sort();
    expect(selectionUnits).toEqual([
      ...['bf16', 'f16', 'f32'].flatMap((d) => [`moba_gate_${d}`, `moba_pool_${d}`, `xattention_score_${d}`]),
      'moba_mask', 'offsets_scan', 'xattention_mask', 'xattention_select',
    ].map((u) => `${S}selection_${u}.cu`).sort());
    const selectionGate = JSON.parse(files.get(`${S}gate.json`)!) as { entries: { file: string }[] };
    expect(selectionGate.entries.map((e) => S + e.file).sort()).toEqual(selectionUnits);
    expect([...files.get(`${S}sources.cmake`)!.matchAll(/(native\/cuda\/selection\/generated\/\S+\.cu)/g)].map((m) => m[1]).sort()).toEqual(selectionUnits);
    // neighborhood: forward; pre-pass per (dtype, head dim) of the backward; dK/dV and dQ
    const naUnits = [...files.keys()].filter((f) => f.startsWith(N) && f.endsWith('.cu'));
    expect(naUnits).toHaveLength(18 + 4 + 12 + 12);
    expect(JSON.parse(files.get(`${N}gate.json`)!).entries.map((e: { file: string }) => N + e.file).sort()).toEqual(naUnits.sort());
    expect(units.every((u) => u.startsWith(G))).toBe(true);
    // merge: one unit per (direction, dtype), in its CMake list and gate manifest, one table row per dtype
    expect(mergeUnits).toEqual(['bf16', 'f16', 'f32'].flatMap((d) => [`${M}merge_bwd_${d}.cu`, `${M}merge_fwd_${d}.cu`]).sort());
    const mergeCmake = files.get(`${M}sources.cmake`)!;
    expect([...mergeCmake.matchAll(/(native\/cuda\/merge\/generated\/\S+\.cu)/g)].map((m) => m[1]).sort()).toEqual(mergeUnits);
    expect(mergeCmake).toContain('native/cuda/merge/launch.cu');
    const mergeGate = JSON.parse(files.get(`${M}gate.json`)!) as { entries: { file: string }[] };
    expect(mergeGate.entries.map((e) => M + e.file).sort()).toEqual(mergeUnits);
    for (const d of ['f32', 'f16', 'bf16'])
      expect(files.get(`${M}dispatch.h`)).toContain(`"merge ${d}", &merge_fwd_${d}, &merge_bwd_${d}}`);
    expect(files.get('native/cuda/generated/sources.cmake')).toContain('include(${CMAKE_SOURCE_DIR}/native/cuda/merge/generated/sources.cmake)');
    // forward: 1 kernel; backward: dK/dV and dQ per instantiation, the pre-pass per (dtype, head dim).
    expect(units).toHaveLength(6 + 6 * 2 + 6);
    const cmake = files.get(`${G}sources.cmake`)!;
    expect([...cmake.matchAll(/(native\/cuda\/fmha\/generated\/\S+\.cu)/g)].map((m) => m[1]).sort()).toEqual(units);
    expect(cmake).toContain('native/cuda/fmha/launch.cu');
    expect(files.get('native/cuda/generated/sources.cmake')).toContain('include(${CMAKE_SOURCE_DIR}/native/cuda/fmha/generated/sources.cmake)');
    const manifest = JSON.parse(files.get(`${G}gate.json`)!) as { entries: { file: string; tensorCore?: boolean; dynamicSmem: number }[] };
    expect(manifest.entries.map((e) => G + e.file).sort()).toEqual(units);
    expect(manifest.entries.filter((e) => e.tensorCore).map((e) => G + e.file).sort()).toEqual(units.filter((u) => !u.includes('_prep_')));
    const dispatch = files.get(`${G}dispatch.h`)!;
    for (const e of list.filter((x) => x.family === 'fmha')) expect(dispatch).toContain(`"${kernelName(e)}"`);
    // the tile shape reaches the kernel traits, and the shared memory follows from it
    const fwd64 = files.get(`${G}fmha_fwd_dense_f16_d64.cu`)!;
    expect(fwd64).toContain('using Tr = Traits<__half, 64, 64, 64, 4>;');
    expect(fwd64).toContain('static_assert(Tr::kFwdSmem == 40960,');  // Q [64][64] + 2 x (K, V) [64][64], 2 bytes each
  });

  it('rejects an invalid list, naming the family or entry', () => {
    const rejects = (edit: Parameters<typeof variant>[0], message: RegExp) =>
      expect(() => gen.readFamilies(variant(edit)), String(message)).toThrow(message);
    rejects((d) => (firstEntry(d).headDim = 96), /families\[0\] \(fmha\): instantiations\[0\]: headDim must be a power of two from 32 to 128, received 96/);
    rejects((d) => (firstEntry(d).headDim = 256), /families\[0\] \(fmha\): instantiations\[0\]: headDim .* received 256/);
    rejects((d) => (firstEntry(d).dtype = 'f32'), /families\[0\] \(fmha\): instantiations\[0\]: dtype must be one of f16, bf16, received 'f32'/);
    rejects((d) => (firstEntry(d).policy = 'causal'), /instantiations\[0\]: policy must be one of dense, received 'causal'/);
    rejects((d) => (firstEntry(d).direction = 'step'), /instantiations\[0\]: direction must be one of fwd, bwd .* received 'step'/);
    rejects((d) => (firstEntry(d).tile = { bm: 128, bn: 64, warps: 8 }), /instantiations\[0\]: tile: bm and bn must equal the mask policies' tile 64/);
    rejects((d) => (firstEntry(d).tile = { bm: 64, bn: 64, warps: 2 }), /instantiations\[0\]: tile: warps must be bm \/ 16/);
    rejects((d) => (firstEntry(d).headdim = 64), /instantiations\[0\]: unknown key 'headdim'/);
    rejects((d) => {
      const e = fmhaOf(d).instantiations as unknown[];
      e.push(e[7]);
    }, /families\[0\] \(fmha\): instantiations\[12\]: duplicate instantiation bwd\/f16\/64\/dense/);
    // op names are the backend table's
    rejects((d) => ((d.families[1]!.ops as Record<string, string>).bwd = 'neighbourhoodBackward'),
      /families\[1\] \(neighborhood\): ops.bwd 'neighbourhoodBackward' is not an op of the backend table \(native\/ops\/ops.cc: /);
    rejects((d) => ((d.families[4]!.ops as Record<string, string>).fwd = 'attention'),
      /families\[4\] \(merge\): op 'attention' is already served by family 'fmha'/);
    // merge entries are a direction and a dtype: no head dim, no tile
    const mergeEntry = (d: { families: Record<string, unknown>[] }) => (d.families[4]!.instantiations as Record<string, unknown>[])[0]!;
    rejects((d) => (mergeEntry(d).headDim = 64), /families\[4\] \(merge\): instantiations\[0\]: unknown key 'headDim' \(expected direction, dtype\)/);
    rejects((d) => (mergeEntry(d).dtype = 'f64'), /families\[4\] \(merge\): instantiations\[0\]: dtype must be one of f32, f16, bf16, received 'f64'/);
    rejects((d) => (d.families[4]!.tile = { bm: 64, bn: 64, warps: 4 }), /families\[4\] \(merge\): the merge kernels have no tile shape/);
    // a family whose kernels are not written yet has no instantiations
    rejects((d) => (d.families[5]!.instantiations = [{ direction: 'fwd', dtype: 'bf16', headDim: 64, policy: 'dense' }]),
      /families\[5\] \(linear\): family 'linear' has no kernels in scripts\/gen-instantiations.mjs yet .* its instantiations must stay empty/);
    // the unchanged list passes
    expect(gen.readFamilies(variant(() => {}))).toEqual(families);
  });

  it('CMakeLists.txt compiles every family\'s generated sources inside if(ATTNKIT_WITH_CUDA)', () => {
    const text = readFileSync(join(root, 'CMakeLists.txt'), 'utf8');
    const block = /if\(ATTNKIT_WITH_CUDA\)\s*\n([\s\S]*?)\nelse\(\)/.exec(text)?.[1] ?? '';
    expect(block).toContain('include(${CMAKE_SOURCE_DIR}/native/cuda/generated/sources.cmake)');
    expect(block).toContain('native/cuda/runtime.cu');
    expect(block).toMatch(/list\(APPEND ATTNKIT_CUDA_SOURCES \$\{ATTNKIT_GENERATED_CUDA_SOURCES\}\)/);
  });
});

// ------------------------------------------------------------------ what the build reads

interface HeaderRow {
  op: string;
  family: string;
  dtype: string;
  headDim: number;
  valueHeadDim: number;
  policy: string;
  kernel: string;
}

/** The rows of the committed supports.h, read from its C++ text. */
function headerRows(): { ops: Map<string, { family: string; count: number }>; rows: HeaderRow[] } {
  const text = readFileSync(join(root, 'native', 'cuda', 'generated', 'supports.h'), 'utf8');
  const ops = new Map<string, { family: string; count: number }>();
  for (const m of text.matchAll(/^inline constexpr OpTable (\w+)\{"(\w+)", "(\w+)", "[^"]*", (?:\w+_rows|nullptr), (\d+)\};$/gm)) {
    expect(m[2], 'the table is named after its op').toBe(m[1]);
    ops.set(m[1]!, { family: m[3]!, count: Number(m[4]) });
  }
  const rows: HeaderRow[] = [];
  for (const m of text.matchAll(/^inline constexpr Row (\w+)_rows\[\] = \{\n([\s\S]*?)\n\};$/gm))
    for (const r of m[2]!.matchAll(/\{DType::(\w+), (\d+), (\d+), "(\w+)", "([^"]+)"\},/g))
      rows.push({ op: m[1]!, family: ops.get(m[1]!)?.family ?? '?', dtype: r[1]!.toLowerCase(), headDim: Number(r[2]),
        valueHeadDim: Number(r[3]), policy: r[4]!, kernel: r[5]! });
  return { ops, rows };
}

const expectedRows: HeaderRow[] = list.map((e) => ({
  op: opOf(e),
  family: e.family,
  dtype: PUBLIC[e.dtype]!,
  headDim: e.headDim ?? 0,
  valueHeadDim: e.headDim ?? 0,
  policy: e.policy ?? 'none',
  kernel: kernelName(e),
}));
const key = (r: { op: string; dtype: string; headDim: number; valueHeadDim: number }) => `${r.op} ${r.dtype} ${r.headDim}/${r.valueHeadDim}`;

describe('supports.h, kernels.json and the built addon agree with the list', () => {
  it('supports.h has a table for every op of every family, with exactly the list\'s rows', () => {
    const { ops, rows } = headerRows();
    expect([...ops.keys()].sort()).toEqual(families.flatMap((f) => Object.values(f.ops)).sort());
    for (const f of families)
      for (const [direction, op] of Object.entries(f.ops)) {
        expect(ops.get(op)?.family, op).toBe(f.family);
        expect(ops.get(op)?.count, op).toBe(f.instantiations.filter((e) => e.direction === direction).length);
      }
    expect(rows.map(key).sort()).toEqual(expectedRows.map(key).sort());
    expect([...rows].sort((a, b) => key(a).localeCompare(key(b)))).toEqual([...expectedRows].sort((a, b) => key(a).localeCompare(key(b))));
  });

  it('kernels.json lists the same kernels, each with its translation units', () => {
    const doc = JSON.parse(readFileSync(join(root, 'native', 'cuda', 'generated', 'kernels.json'), 'utf8')) as {
      families: { family: string; ops: { op: string; kernels: { dtype: string; headDim: number; valueHeadDim: number; kernel: string; units: { file: string }[] }[] }[] }[];
    };
    expect(doc.families.map((f) => f.family)).toEqual(families.map((f) => f.family));
    const rows = doc.families.flatMap((f) => f.ops.flatMap((o) => o.kernels.map((k) => ({ ...k, op: o.op }))));
    expect(rows.map(key).sort()).toEqual(expectedRows.map(key).sort());
    for (const r of rows) {
      // fmha and neighborhood bwd: pre-pass, dK/dV, dQ; selection: its typed kernels (pool and gate, or score), the
      // shared ones and the scan; blockSparse adds its plan kernel to each direction
      const units = { 'fmha bwd': 3, 'neighborhood bwd': 3, 'blockSparse fwd': 2, 'blockSparse bwd': 4 }[r.kernel.split(' ').slice(0, 2).join(' ')] ??
        (r.kernel.startsWith('selection') ? 4 : 1);
      expect(r.units.length, r.kernel).toBe(units);
      for (const u of r.units) expect(readFileSync(join(root, u.file), 'utf8'), u.file).toContain('Generated by scripts/gen-instantiations.mjs');
    }
  });

  // Every combination of the list, and ones next to it: other head dims, a value head dim that differs.
  const probeDims = [...new Set([16, 40, 96, 256, ...list.flatMap((e) => (e.headDim ? [e.headDim] : []))])].sort((a, b) => a - b);
  const dtypes = ['float32', 'float16', 'bfloat16'] as const;
  const ask = (op: string, dtype: keyof typeof DTYPES, D: number, Dv = D) =>
    native.supports(op, 0, { dtype: DTYPES[dtype].code, B: 1, Nq: 64, Nk: 64, H: 2, Hkv: 1, D, Dv });

  it('native.supports on cuda:0 accepts exactly the listed combinations, and otherwise names what it supports', () => {
    const i = info();
    // A row with head dim 0 takes any head dim.
    const takes = (r: HeaderRow, dtype: string, D: number, Dv: number) =>
      r.dtype === dtype && (r.headDim === 0 || r.headDim === D) && (r.valueHeadDim === 0 || r.valueHeadDim === Dv);
    const acceptedRows = new Set<HeaderRow>();
    for (const op of new Set(expectedRows.map((r) => r.op))) {
      const rows = expectedRows.filter((r) => r.op === op);
      for (const dtype of dtypes)
        for (const D of probeDims)
          for (const Dv of [D, D === 64 ? 32 : 64]) {
            const why = ask(op, dtype, D, Dv);
            const label = `${op} ${dtype} D=${D} Dv=${Dv}: '${why}'`;
            if (!i.cuda.compiled) {
              expect(why, label).toBe('attnkit was built without CUDA (nvcc was not found or ATTNKIT_CUDA=OFF)');
              continue;
            }
            if (!i.cuda.attentionKernels) {
              expect(why, label).toMatch(/^not implemented on CUDA yet \(this build has no CUDA .* kernels\)$/);
              continue;
            }
            const taking = rows.filter((r) => takes(r, dtype, D, Dv));
            expect(why === '', label).toBe(taking.length > 0);
            if (taking.length > 0) {
              for (const r of taking) acceptedRows.add(r);
              continue;
            }
            const ofDtype = rows.filter((r) => r.dtype === dtype);
            if (ofDtype.length === 0) {
              // the dtype asked for, and every dtype the op's kernels take
              expect(why, label).toContain(`dtype ${dtype} is not supported on CUDA`);
              for (const r of rows) expect(why, label).toContain(r.dtype);
            } else if (Dv !== D) {
              expect(why, label).toBe(`a value head dim (${Dv}) different from the key head dim (${D}) is not supported on CUDA`);
            } else {
              // the head dim asked for, and every head dim of the dtype
              expect(why, label).toMatch(new RegExp(`^head dim ${D} is not supported on CUDA`));
              for (const r of ofDtype) expect(why, label).toContain(String(r.headDim));
            }
          }
    }
    // every listed row accepted something (so each kernel is reachable)
    if (i.cuda.compiled && i.cuda.attentionKernels) expect(acceptedRows.size).toBe(expectedRows.length);
  });

  it('the backend table has a CUDA kernel exactly for the ops with listed kernels', () => {
    const table = new Map(native.opTable().map((r) => [r.op, r.cuda]));
    for (const f of families)
      for (const [direction, op] of Object.entries(f.ops))
        expect(table.get(op), op).toBe(f.instantiations.some((e) => e.direction === direction));
  });

  it('info().cuda.kernels: the listed kernels this build runs (all of them in a CUDA build, none without)', () => {
    const i = info();
    const got = i.cuda.kernels.map(key).sort();
    expect(got).toEqual(i.cuda.compiled && i.cuda.attentionKernels ? expectedRows.map(key).sort() : []);
    for (const k of i.cuda.kernels) expect(k.tile).toEqual(list.find((e) => kernelName(e) === k.kernel)!.tile);
  });
});
