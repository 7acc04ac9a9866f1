/**
 * The one emulator test driver's view of the kernel families (used by test/cuda-kernels.test.ts): the
 * instantiation list as it is committed, and per family what the driver needs to run every
 * instantiation under the SIMT emulator: the C++ test program (which holds the family's float64
 * reference and its tolerance rule), the translation units it links, the case name of an
 * instantiation, and the shapes the driver adds to the program's own (`SIMT_SHAPES`). A family with
 * instantiations and no entry in FAMILIES fails the driver. Not a test file itself.
 */
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { root } from './simt-toolchain.ts';

/** One kernel instantiation of the list (family added where the list nests entries per family). */
export interface Instantiation {
  family: string;
  direction: string;
  dtype: string;
  headDim: number;
  policy: string;
}

/** A family of the list with its instantiations (possibly none yet) and its tile sizes. */
export interface ListedFamily {
  family: string;
  /** The family's folder, relative to the repository root. */
  dir: string;
  /** Query and key tile sizes (positions). */
  tile: { bm: number; bn: number };
  instantiations: Instantiation[];
}

/** Where the list lives: one list for every family, or (before families) the fused-attention list. */
export const LIST_PATHS = ['native/cuda/instantiations.json', 'native/cuda/fmha/instantiations.json'];

const DEFAULT_TILE = { bm: 64, bn: 64 };

/**
 * The committed instantiation list, from the first of LIST_PATHS that exists. Reads both formats:
 * `{ families: [{ family, dir?, tile?, instantiations: [...] }] }` and the flat
 * `{ instantiations: [{ family, ... }] }`.
 */
export function readInstantiations(): { path: string; families: ListedFamily[] } {
  const path = LIST_PATHS.find((p) => existsSync(join(root, p)));
  if (path === undefined) throw new Error(`no instantiation list: none of ${LIST_PATHS.join(', ')} exists`);
  const json = JSON.parse(readFileSync(join(root, path), 'utf8')) as {
    families?: { family: string; dir?: string; tile?: { bm?: number; bn?: number }; instantiations?: Omit<Instantiation, 'family'>[] }[];
    instantiations?: Instantiation[];
  };
  const families: ListedFamily[] = [];
  const add = (family: string, dir: string | undefined, tile: { bm?: number; bn?: number } | undefined) => {
    const f: ListedFamily = {
      family,
      dir: dir ?? `native/cuda/${family}`,
      tile: { bm: tile?.bm ?? DEFAULT_TILE.bm, bn: tile?.bn ?? DEFAULT_TILE.bn },
      instantiations: [],
    };
    families.push(f);
    return f;
  };
  for (const f of json.families ?? []) {
    const entry = add(f.family, f.dir, f.tile);
    for (const e of f.instantiations ?? []) entry.instantiations.push({ ...e, family: f.family });
  }
  for (const e of json.instantiations ?? []) {
    const entry = families.find((f) => f.family === e.family) ?? add(e.family, undefined, undefined);
    entry.instantiations.push(e);
  }
  return { path, families };
}

/** A shape the driver adds to a program's own, one line of the SIMT_SHAPES file. */
export interface ShapeRow {
  dir: 'fwd' | 'bwd';
  B: number;
  Nq: number;
  Nk: number;
  H: number;
  Hkv: number;
  causal: boolean;
  left: number;
  right: number;
  dlse: boolean;
  what: string;
}

/** The SIMT_SHAPES file text (native/simt/tests/harness.h, rows_from_env). */
export function shapesFile(rows: ShapeRow[]): string {
  return rows
    .map((r) => `dir=${r.dir} B=${r.B} Nq=${r.Nq} Nk=${r.Nk} H=${r.H} Hkv=${r.Hkv} causal=${r.causal ? 1 : 0} ` +
      `left=${r.left} right=${r.right} dlse=${r.dlse ? 1 : 0} what=${r.what}`)
    .join('\n') + '\n';
}

const mod = (a: number, m: number) => ((a % m) + m) % m;

/**
 * Where a mask edge crosses the key tiles, as a residue modulo the key tile size `bn`: with query i at
 * key position i + (Nk - Nq), the right edge (causal diagonal, or `right` of a window) is at residue
 * (Nk - Nq + right) mod bn, the left edge at (Nk - Nq - left) mod bn. For a full query tile the
 * classification of a tile pair changes at right-edge residue bn - 1 (the diagonal tile turns Full)
 * and 0 / 1 (Skip turns Partial), and at left-edge residue 1 / 2 (Full) and bn - 1 / 0 (Skip); a
 * classification off by one shows only next to those. These residue classes are what every kernel
 * run covers (the host policy tests check all bn residues against `allows`, test/policy.test.ts).
 */
export function boundaryResidues(bn: number): { right: number[]; left: number[] } {
  const set = (rs: number[]) => [...new Set(rs.map((r) => mod(r, bn)))];
  return { right: set([bn - 2, bn - 1, 0, 1]), left: set([bn - 1, 0, 1, 2]) };
}

/** The right-edge and left-edge residues of a dense problem (left/right < 0: that edge is absent). */
export function denseEdges(s: Pick<ShapeRow, 'Nq' | 'Nk' | 'causal' | 'left' | 'right'>, bn: number): { right?: number; left?: number } {
  const off = s.Nk - s.Nq;
  const right = s.causal ? (s.right < 0 ? 0 : Math.min(s.right, 0)) : s.right;
  return {
    ...(right >= 0 ? { right: mod(off + right, bn) } : {}),
    ...(s.left >= 0 ? { left: mod(off - s.left, bn) } : {}),
  };
}

/**
 * Dense-policy shapes that put every mask edge in every boundary residue class of the key tile:
 * causal with Nk < Nq (rows that see nothing), causal with Nk > Nq and a left window, a two-sided
 * window, and tails one position into and one short of a tile with every key visible (a Full tile
 * on a partial key tile must be demoted). Small (at most 3 x 4 tiles): every shape runs for every
 * instantiation in every thread order.
 */
export function denseOffsetShapes(tile: { bm: number; bn: number }): Omit<ShapeRow, 'dir' | 'dlse'>[] {
  const { bm, bn } = tile;
  const { right: R, left: L } = boundaryResidues(bn);
  const shapes: Omit<ShapeRow, 'dir' | 'dlse'>[] = [];
  const base = { B: 1, H: 1, Hkv: 1 };
  R.forEach((r, i) => {
    const rl = L[i % L.length]!;
    const Nq = bm + 17;
    shapes.push({ ...base, Nq, Nk: Nq + r - bn, causal: true, left: -1, right: -1, what: `causal Nk < Nq, diagonal residue ${r}` });
    const Nq2 = bm + 5;
    shapes.push({ ...base, Nq: Nq2, Nk: Nq2 + r + bn, causal: true, left: mod(r - rl, bn) + bn, right: -1,
      what: `causal Nk > Nq + left window, residues ${r} / ${rl}` });
    const rw = L[(i + 1) % L.length]!;
    const N = 2 * bm + 3;
    shapes.push({ ...base, Nq: N, Nk: N, causal: false, left: mod(-rw, bn), right: r, what: `window, residues ${r} / ${rw}` });
  });
  for (const [Nq, Nk] of [[bm + 1, 2 * bn - 1], [2 * bm - 1, bn + 1]] as const)
    shapes.push({ ...base, Nq, Nk, causal: false, left: -1, right: -1, what: `full, tails ${Nq % bm} / ${Nk % bn}` });
  return shapes;
}

/** What the driver needs of a family to run its instantiations under the emulator. */
export interface EmulatedFamily {
  family: string;
  /** The C++ test program: one SIMT_TEST per instantiation, the float64 reference and the tolerance rule. */
  program: string;
  /** Where the float64 reference is (for the report). */
  reference: string;
  /** The tolerance rule the program applies (for the report). */
  tolerance: string;
  /** Translation units linked into the program (the generated ones: what the build compiles). */
  units(f: ListedFamily): string[];
  /** The program's case for an instantiation. */
  caseName(e: Instantiation): string;
  /** Shapes added to the program's own, for every instantiation of that direction. */
  shapes(f: ListedFamily): ShapeRow[];
}

/** A family's generated translation units (what the CMake build compiles), repository-relative. */
function generatedUnits(f: ListedFamily): string[] {
  const dir = join(root, f.dir, 'generated');
  return readdirSync(dir).filter((u) => u.endsWith('.cu')).sort().map((u) => join(f.dir, 'generated', u));
}

export const FAMILIES: EmulatedFamily[] = [
  {
    family: 'fmha',
    program: 'native/cuda/fmha/tests/fmha_test.cc',
    reference: 'native/cuda/fmha/tests/reference.h',
    tolerance: 'per tensor, max error <= 2x (3x for gradients) that of a naive low-precision implementation, + 1e-5 max(|ref|, 1)',
    units: generatedUnits,
    caseName: (e) => `${e.family}_${e.direction}_${e.policy}_${e.dtype}_d${e.headDim}`,
    shapes: (f) => {
      const rows: ShapeRow[] = [];
      for (const dir of ['fwd', 'bwd'] as const)
        denseOffsetShapes(f.tile).forEach((s, i) => rows.push({ ...s, dir, dlse: dir === 'bwd' && i % 3 === 1 }));
      return rows;
    },
  },
  {
    family: 'merge',
    program: 'native/cuda/merge/tests/merge_test.cc',
    reference: 'native/cuda/merge/tests/merge_test.cc (reference)',
    tolerance: 'per tensor, max error <= 2x the rounding of the float64 result to the dtype (LSE and dLse: to float32), + 4e-6 max(|ref|, 1) for the float32 accumulations',
    units: generatedUnits,
    caseName: (e) => `merge_${e.direction}_${e.dtype}`,
    // memory-bound rows, no mask: the program's own shapes (odd rows and value dims, 1..16 parts) cover it
    shapes: () => [],
  },
  {
    family: 'selection',
    program: 'native/cuda/selection/tests/selection_test.cc',
    reference: 'native/cuda/selection/tests/selection_test.cc (float64 scores, the selection rules, host mask lists)',
    tolerance: 'scores within a float32 bound of float64; selections exactly the rule on the kernel\'s own scores and float64\'s where the margin is clear; mask lists exactly the host\'s',
    units: generatedUnits,
    caseName: (e) => `selection_${e.direction}_${e.dtype}`,
    // the program's own shapes (tails, Nq != Nk, GQA, ties, thresholds 0 and 1) cover it: no dense mask edges
    shapes: () => [],
  },
  {
    family: 'blockSparse',
    program: 'native/cuda/block_sparse/tests/blockSparse_test.cc',
    reference: 'native/cuda/block_sparse/tests/blockSparse_test.cc (reference, from the decoded mask)',
    tolerance: 'per tensor, max error <= 2x (3x for gradients) that of a naive low-precision implementation, + 1e-5 max(|ref|, 1); the device plan equal to the host plan',
    units: generatedUnits,
    caseName: (e) => `${e.family}_${e.direction}_${e.dtype}_d${e.headDim}`,
    // the masks (causal, window, documents, neighborhood, random; every block geometry) are the program's own
    shapes: () => [],
  },
  {
    family: 'neighborhood',
    program: 'native/cuda/neighborhood/tests/neighborhood_test.cc',
    reference: 'native/cuda/neighborhood/tests/neighborhood_test.cc (axis_visible, forward_ref, backward_ref)',
    tolerance: 'per tensor, max error <= 2x (3x for gradients) that of a naive low-precision implementation, + 1e-5 max(|ref|, 1)',
    units: generatedUnits,
    caseName: (e) => `${e.family}_${e.direction}_${e.policy}_${e.dtype}_d${e.headDim}`,
    // the problems are spatial grids, not (Nq, Nk) windows: the program's own per-rank shapes cover the
    // boundaries (odd extents, tile and dilation tails, kernel = extent, strides, causal axes, GQA)
    shapes: () => [],
  },
];
