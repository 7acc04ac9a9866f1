/**
 * Block-sparse attention through the public API: the benchmark behind
 * `attnkit bench --op blocksparse|moba` (issue 4, "Performance").
 *
 * 1. Validation first: small instances against the float64 references (refusing to time on a
 *    mismatch): blockSparseAttention forward and backward on a random 64 x 64 block mask with a
 *    tail, in every timed dtype; mobaMask and xattentionMask scores within float32 accuracy and
 *    their selection exactly the reference's on the op's own scores, their mask exactly the
 *    selection's elements.
 * 2. Density sweep: [B, N, H, D] with random block masks (fromBlocks, fixed seed, exactly
 *    round(density * Qb * Kb) blocks per head, not causal): blockSparseAttention forward (and
 *    backward) against dense `attention` on the same tensors; speedup = dense / sparse;
 *    backward / forward of the sparse op.
 * 3. Selection: mobaMask and xattentionMask build time (enqueue + synchronize) against the
 *    blockSparseAttention forward on the mask they produce (the attention they feed).
 *
 * Each measurement: `warmup` untimed runs, then `repeats` timed ones; the median (or, with
 * `statistic: 'min'`, the fastest run) is reported. The
 * density sweep runs in rounds (dense and every density once per round), so that load changes on a
 * shared machine affect them alike.
 */
import * as ak from '../index.js';
import type { BlockMask, FloatDType, Tensor } from '../index.js';
import { absMaxError, fmt, formatTable, median, msSince, relativeMaxError } from './common.js';
import { TOLERANCES } from './attention.js';

export interface MobaBenchConfig {
  blockSize: number;
  topK: number;
  causal: boolean;
}

export interface XattnBenchConfig {
  stride: number;
  threshold: number;
  blockSize: number;
  causal: boolean;
}

export interface BlockSparseBenchOptions {
  /** Tokens (Nq = Nk). Default 8192. */
  N?: number;
  B?: number;
  /** Query heads = kv heads. Default 4. */
  H?: number;
  /** Head dim. Default 64. */
  D?: number;
  /** Mask block (square). Default 64. */
  block?: number;
  /** Block densities of the sweep. Default 0.05, 0.1, 0.25, 0.5, 1. */
  densities?: readonly number[];
  dtypes?: readonly FloatDType[];
  /** Time the backward too. Default true. */
  backward?: boolean;
  /** Selection ops to time; default: both with the configurations below. Empty = none. */
  moba?: readonly MobaBenchConfig[];
  xattention?: readonly XattnBenchConfig[];
  /** Skip the density sweep (e.g. `--op moba`). */
  skipDensity?: boolean;
  /** Also time the ~50 % mask with its blocks listed as partial (default true). */
  partialProbe?: boolean;
  repeats?: number;
  warmup?: number;
  /**
   * Reported statistic of the timed runs: 'median' (default) or 'min' (the least disturbed run,
   * for a machine shared with other work).
   */
  statistic?: 'median' | 'min';
  seed?: number;
  onStep?: (label: string) => void;
}

/** MoBA at N = 8192: the anchor's 8K training configuration (block 512, top-3) and a finer one. */
export const DEFAULT_MOBA: readonly MobaBenchConfig[] = [
  { blockSize: 512, topK: 3, causal: true },
  { blockSize: 256, topK: 3, causal: true },
];
/** XAttention's two published strides, threshold 0.9, 64-token blocks. */
export const DEFAULT_XATTN: readonly XattnBenchConfig[] = [
  { stride: 8, threshold: 0.9, blockSize: 64, causal: true },
  { stride: 16, threshold: 0.9, blockSize: 64, causal: true },
];
export const DEFAULT_DENSITIES: readonly number[] = [0.05, 0.1, 0.25, 0.5, 1];

export interface Validation {
  what: string;
  dtype: FloatDType;
  ok: boolean;
  errors: Record<string, number>;
  tolerances: Record<string, number>;
}

export interface DensityRow {
  dtype: FloatDType;
  density: number;
  /** listed blocks / all blocks of the generated mask */
  blockDensity: number;
  sparseFwdMs: number;
  denseFwdMs: number;
  /** dense / sparse forward */
  speedupFwd: number;
  sparseBwdMs: number | null;
  denseBwdMs: number | null;
  speedupBwd: number | null;
  /** sparse backward / sparse forward */
  bwdOverFwd: number | null;
}

export interface SelectionRow {
  op: 'mobaMask' | 'xattentionMask';
  config: string;
  dtype: FloatDType;
  buildMs: number;
  /** blockSparseAttention forward on the produced mask */
  attentionMs: number;
  /** buildMs / attentionMs */
  fraction: number;
  blockDensity: number;
  density: number;
  /** dense causal `attention` forward on the same tensors */
  denseCausalMs: number;
}

export interface BlockSparseBenchReport {
  isa: string;
  threads: number;
  shape: { B: number; N: number; H: number; D: number; block: number };
  repeats: number;
  warmup: number;
  statistic: 'median' | 'min';
  validation: Validation[];
  density: DensityRow[];
  partialProbe: PartialProbe[];
  selection: SelectionRow[];
}

/** Forward time of one random mask with its blocks listed as full vs as partial (all-ones bitmaps). */
export interface PartialProbe {
  dtype: FloatDType;
  blockDensity: number;
  fullMs: number;
  partialMs: number;
  /** partialMs / fullMs: the cost of the element-masking path per visited tile */
  ratio: number;
}

export class BlockSparseValidationFailure extends Error {
  readonly validation: Validation[];
  constructor(validation: Validation[]) {
    const bad = validation.filter((v) => !v.ok);
    super(
      'validation against the float64 reference failed, refusing to report timings: ' +
        bad
          .map(
            (v) =>
              `${v.what} ${v.dtype}: ` +
              Object.keys(v.errors)
                .filter((k) => !(v.errors[k]! <= v.tolerances[k]!))
                .map((k) => `${k} error ${v.errors[k]!.toExponential(2)} > ${v.tolerances[k]!.toExponential(0)}`)
                .join(', '),
          )
          .join('; '),
    );
    this.name = 'BlockSparseValidationFailure';
    this.validation = validation;
  }
}

/** Deterministic uniform numbers in [0, 1) (mulberry32). */
function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * Random block mask [1, H, Qb, Kb]: per head exactly round(density * Qb * Kb) blocks, uniformly
 * (Fisher-Yates), listed as full blocks (fromBlocks). Not causal.
 */
export function randomBlockMask(N: number, H: number, block: number, density: number, seed: number): BlockMask {
  const nb = Math.ceil(N / block);
  const per = nb * nb;
  const grid = new Uint8Array(H * per);
  const r = rng(seed);
  const order = new Int32Array(per);
  for (let h = 0; h < H; h++) {
    for (let i = 0; i < per; i++) order[i] = i;
    const take = Math.round(density * per);
    for (let i = 0; i < take; i++) {
      const j = i + Math.floor(r() * (per - i));
      const t = order[i]!;
      order[i] = order[j]!;
      order[j] = t;
      grid[h * per + order[i]!] = 1;
    }
  }
  return ak.BlockMask.fromBlocks(grid, [1, H, nb, nb], { Nq: N, Nk: N, blockQ: block, blockK: block });
}

/**
 * Interleaved timing of several runs: `warmup + repeats` rounds of every run; the median (or the
 * minimum) of the timed rounds per run.
 */
async function timeRounds(
  runs: readonly (() => () => void)[],
  warmup: number,
  repeats: number,
  statistic: 'median' | 'min',
  done?: (i: number) => void,
): Promise<number[]> {
  const times: number[][] = runs.map(() => []);
  for (let round = 0; round < warmup + repeats; round++)
    for (const [i, run] of runs.entries()) {
      const t0 = process.hrtime.bigint();
      const dispose = run();
      await ak.synchronize();
      const ms = msSince(t0);
      dispose();
      if (round >= warmup) times[i]!.push(ms);
      if (round === warmup + repeats - 1) done?.(i);
    }
  return times.map((t) => (statistic === 'min' ? Math.min(...t) : median(t)));
}

const disposeAll = (ts: readonly Tensor[]) => () => ts.forEach((t) => t.dispose());

// ------------------------------------------------------------------ validation

const VAL_N = 150; // two 64-blocks and a tail
const VAL_H = 2;

/** Small blockSparseAttention forward + backward against the float64 reference. */
export async function validateBlockSparse(dtype: FloatDType, D: number, block: number, seed: number): Promise<Validation> {
  const shape = [1, VAL_N, VAL_H, D];
  const q = ak.randn(shape, { dtype, seed });
  const k = ak.randn(shape, { dtype, seed: seed + 1 });
  const v = ak.randn(shape, { dtype, seed: seed + 2 });
  const dOut = ak.randn(shape, { dtype, seed: seed + 3 });
  const mask = randomBlockMask(VAL_N, VAL_H, Math.min(block, 64), 0.5, seed + 4);
  const r = ak.blockSparseAttention(q, k, v, mask);
  const g = r.backward(dOut);
  try {
    const [qa, ka, va, da, out, lse, dq, dk, dv] = await Promise.all([q, k, v, dOut, r.out, r.lse, g.dq, g.dk, g.dv].map((t) => t.toArray()));
    const p = { B: 1, Nq: VAL_N, Nk: VAL_N, H: VAL_H, Hkv: VAL_H, D, Dv: D, q: qa!, k: ka!, v: va! };
    const m = { data: await mask.toDense(), B: mask.B, H: mask.H };
    const ref = ak.reference.referenceBlockSparse(p, m);
    const rg = ak.reference.referenceBlockSparseBackward(p, m, da!);
    const tol = TOLERANCES[dtype];
    const errors = {
      out: relativeMaxError(out!, ref.out),
      lse: absMaxError(lse!, ref.lse),
      dq: relativeMaxError(dq!, rg.dq),
      dk: relativeMaxError(dk!, rg.dk),
      dv: relativeMaxError(dv!, rg.dv),
    };
    const tolerances = { out: tol.out, lse: tol.lse, dq: tol.grad, dk: tol.grad, dv: tol.grad };
    const ok = Object.keys(errors).every((x) => errors[x as keyof typeof errors] <= tolerances[x as keyof typeof tolerances]);
    return { what: `blockSparseAttention N=${VAL_N} D=${D} blocks ${Math.min(block, 64)}x${Math.min(block, 64)} fwd+bwd`, dtype, ok, errors, tolerances };
  } finally {
    [q, k, v, dOut, r.out, r.lse, g.dq, g.dk, g.dv].forEach((t) => t.dispose());
  }
}

const sameArrays = (a: ArrayLike<number>, b: ArrayLike<number>) => {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
};

/** Count of mismatching entries (selection and mask elements) and the score error of a selection op. */
export async function validateSelection(
  op: 'mobaMask' | 'xattentionMask',
  config: MobaBenchConfig | XattnBenchConfig,
  dtype: FloatDType,
  D: number,
  seed: number,
): Promise<Validation> {
  const N = 'topK' in config ? Math.max(3 * config.blockSize + 37, 300) : 4 * config.blockSize + 37;
  const dims = { B: 1, Nq: N, Nk: N, H: VAL_H, Hkv: VAL_H, D };
  const q = ak.randn([1, N, VAL_H, D], { dtype, seed });
  const k = ak.randn([1, N, VAL_H, D], { dtype, seed: seed + 1 });
  try {
    const [qa, ka] = await Promise.all([q.toArray(), k.toArray()]);
    let scores: Float64Array;
    let selected: ArrayLike<number>;
    let dense: Uint8Array;
    let refScores: Float64Array;
    let ownSelected: ArrayLike<number>;
    let vis: Uint8Array;
    if ('topK' in config) {
      const r = ak.mobaMask(q, k, config);
      scores = Float64Array.from((await r.scores.toArray()) as Float32Array);
      selected = (await r.selected.toArray()) as Int32Array;
      dense = await r.mask.toDense();
      r.scores.dispose();
      r.selected.dispose();
      r.mask.dispose();
      refScores = ak.reference.referenceMobaSelect(qa!, ka!, dims, config).scores;
      ownSelected = ak.reference.referenceMobaSelect(qa!, ka!, dims, { ...config, scores }).selected;
      vis = ak.reference.mobaVisibility(selected, dims, config);
    } else {
      const r = ak.xattentionMask(q, k, config);
      scores = Float64Array.from((await r.scores.toArray()) as Float32Array);
      selected = (await r.selected.toArray()) as Uint8Array;
      dense = await r.mask.toDense();
      r.scores.dispose();
      r.selected.dispose();
      r.mask.dispose();
      refScores = ak.reference.referenceXattentionSelect(qa!, ka!, dims, config).scores;
      const own = ak.reference.referenceXattentionSelect(qa!, ka!, dims, { ...config, scores });
      // rows whose cumulative sums sit within float32 rounding of the threshold keep the op's choice
      const want = Uint8Array.from(own.selected);
      for (let row = 0; row < own.margin.length; row++)
        if (own.margin[row]! > 0 && own.margin[row]! < 1e-6) for (let kb = 0; kb < own.Kb; kb++) want[row * own.Kb + kb] = selected[row * own.Kb + kb]!;
      ownSelected = want;
      vis = ak.reference.xattentionVisibility(selected, dims, config);
    }
    const errors = {
      scores: relativeMaxError(scores, refScores),
      selection: sameArrays(selected, ownSelected) ? 0 : 1,
      maskElements: sameArrays(dense, vis) ? 0 : 1,
    };
    const tolerances = { scores: 1e-5, selection: 0, maskElements: 0 };
    const ok = errors.scores <= tolerances.scores && errors.selection === 0 && errors.maskElements === 0;
    return { what: `${op} ${configLabel(config)} N=${N} D=${D}`, dtype, ok, errors, tolerances };
  } finally {
    q.dispose();
    k.dispose();
  }
}

export function configLabel(c: MobaBenchConfig | XattnBenchConfig): string {
  return 'topK' in c
    ? `block ${c.blockSize} top-${c.topK}${c.causal ? ' causal' : ''}`
    : `stride ${c.stride} threshold ${c.threshold} block ${c.blockSize}${c.causal ? ' causal' : ''}`;
}

// ------------------------------------------------------------------ benchmark

/** Validates, then times the density sweep and the selection ops. */
export async function benchBlockSparse(o: BlockSparseBenchOptions = {}): Promise<BlockSparseBenchReport> {
  const N = o.N ?? 8192;
  const B = o.B ?? 1;
  const H = o.H ?? 4;
  const D = o.D ?? 64;
  const block = o.block ?? 64;
  const densities = o.densities ?? DEFAULT_DENSITIES;
  const dtypes = o.dtypes ?? ['float32', 'bfloat16'];
  const backward = o.backward ?? true;
  const moba = o.moba ?? DEFAULT_MOBA;
  const xattn = o.xattention ?? DEFAULT_XATTN;
  const repeats = o.repeats ?? 3;
  const warmup = o.warmup ?? 1;
  const statistic = o.statistic ?? 'median';
  const seed = o.seed ?? 1234;
  const step = o.onStep ?? (() => {});
  const { isa, threads } = ak.info().cpu;

  const validation: Validation[] = [];
  for (const dtype of dtypes) {
    validation.push(await validateBlockSparse(dtype, D, block, seed));
    step(`validate blockSparseAttention ${dtype}`);
    for (const c of moba) {
      validation.push(await validateSelection('mobaMask', c, dtype, D, seed + 10));
      step(`validate mobaMask ${dtype}`);
    }
    for (const c of xattn) {
      validation.push(await validateSelection('xattentionMask', c, dtype, D, seed + 20));
      step(`validate xattentionMask ${dtype}`);
    }
  }
  if (validation.some((v) => !v.ok)) throw new BlockSparseValidationFailure(validation);

  const density: DensityRow[] = [];
  const partialProbe: PartialProbe[] = [];
  const selection: SelectionRow[] = [];
  const shape = [B, N, H, D];
  for (const dtype of dtypes) {
    const q = ak.randn(shape, { dtype, seed: seed + 100 });
    const k = ak.randn(shape, { dtype, seed: seed + 101 });
    const v = ak.randn(shape, { dtype, seed: seed + 102 });
    const dOut = ak.randn(shape, { dtype, seed: seed + 103 });
    await ak.synchronize();
    try {
      if (!o.skipDensity) {
        // Rounds: each round runs dense once and every density once, so that load changes on a
        // shared machine hit all of them alike; medians over the timed rounds.
        const masks = densities.map((dens, di) => randomBlockMask(N, H, block, dens, seed + 1000 + di));
        const blockDensities = await Promise.all(masks.map((m) => m.blockDensity()));
        // The mask of the density nearest 50 % once more with every block listed as partial
        // (all-ones bitmaps): same visited tiles, element-masking path.
        const probeAt = densities.reduce((best, d, i) => (Math.abs(d - 0.5) < Math.abs(densities[best]! - 0.5) ? i : best), 0);
        const probe = o.partialProbe === false || !masks.length ? null : asPartial(masks[probeAt]!);
        const runs: (() => () => void)[] = [
          () => {
            const r = ak.attention(q, k, v);
            return disposeAll([r.out, r.lse]);
          },
          ...masks.map((mask) => () => {
            const r = ak.blockSparseAttention(q, k, v, mask);
            return disposeAll([r.out, r.lse]);
          }),
        ];
        if (probe)
          runs.push(() => {
            const r = ak.blockSparseAttention(q, k, v, probe);
            return disposeAll([r.out, r.lse]);
          });
        const fwd = await timeRounds(runs, warmup, repeats, statistic, (i) => step(i === 0 ? `dense attention forward ${dtype}` : `blockSparseAttention forward ${dtype} density ${densities[i - 1]}`));
        let bwd: number[] | null = null;
        if (backward) {
          const fwdResults = [ak.attention(q, k, v), ...masks.map((mask) => ak.blockSparseAttention(q, k, v, mask))];
          await ak.synchronize();
          bwd = await timeRounds(
            fwdResults.map((r) => () => {
              const g = r.backward(dOut);
              return disposeAll([g.dq, g.dk, g.dv]);
            }),
            warmup,
            repeats,
            statistic,
            (i) => step(i === 0 ? `dense attention backward ${dtype}` : `blockSparseAttention backward ${dtype} density ${densities[i - 1]}`),
          );
          fwdResults.forEach((r) => (r.out.dispose(), r.lse.dispose()));
        }
        masks.forEach((m) => m.dispose());
        probe?.dispose();
        if (probe)
          partialProbe.push({ dtype, blockDensity: blockDensities[probeAt]!, fullMs: fwd[probeAt + 1]!, partialMs: fwd[masks.length + 1]!, ratio: fwd[masks.length + 1]! / fwd[probeAt + 1]! });
        for (const [di, dens] of densities.entries()) {
          const sparseFwdMs = fwd[di + 1]!;
          const sparseBwdMs = bwd ? bwd[di + 1]! : null;
          const denseBwdMs = bwd ? bwd[0]! : null;
          density.push({
            dtype,
            density: dens,
            blockDensity: blockDensities[di]!,
            sparseFwdMs,
            denseFwdMs: fwd[0]!,
            speedupFwd: fwd[0]! / sparseFwdMs,
            sparseBwdMs,
            denseBwdMs,
            speedupBwd: sparseBwdMs !== null && denseBwdMs !== null ? denseBwdMs / sparseBwdMs : null,
            bwdOverFwd: sparseBwdMs !== null ? sparseBwdMs / sparseFwdMs : null,
          });
        }
      }
      const selections: [SelectionRow['op'], MobaBenchConfig | XattnBenchConfig][] = [
        ...moba.map((c) => ['mobaMask', c] as [SelectionRow['op'], MobaBenchConfig]),
        ...xattn.map((c) => ['xattentionMask', c] as [SelectionRow['op'], XattnBenchConfig]),
      ];
      let denseCausalMs = NaN;
      for (const [si, [op, c]] of selections.entries()) {
        const build = () => ('topK' in c ? ak.mobaMask(q, k, c) : ak.xattentionMask(q, k, c));
        const sel = build();
        await ak.synchronize();
        const blockDensity = await sel.mask.blockDensity();
        const dens = await maskDensity(sel.mask);
        const runs: (() => () => void)[] = [
          () => {
            const r = build();
            return () => (r.scores.dispose(), r.selected.dispose(), r.mask.dispose());
          },
          () => {
            const r = ak.blockSparseAttention(q, k, v, sel.mask);
            return disposeAll([r.out, r.lse]);
          },
        ];
        // dense causal attention on the same tensors, once per dtype, as a yardstick
        if (si === 0)
          runs.push(() => {
            const r = ak.attention(q, k, v, { causal: true });
            return disposeAll([r.out, r.lse]);
          });
        const [buildMs, attentionMs, causalMs] = await timeRounds(runs, warmup, repeats, statistic);
        if (si === 0) denseCausalMs = causalMs!;
        sel.scores.dispose();
        sel.selected.dispose();
        sel.mask.dispose();
        selection.push({
          op,
          config: configLabel(c),
          dtype,
          buildMs: buildMs!,
          attentionMs: attentionMs!,
          fraction: buildMs! / attentionMs!,
          blockDensity,
          density: dens,
          denseCausalMs,
        });
        step(`${op} ${configLabel(c)} ${dtype}`);
      }
    } finally {
      [q, k, v, dOut].forEach((t) => t.dispose());
    }
  }
  return { isa, threads, shape: { B, N, H, D, block }, repeats, warmup, statistic, validation, density, partialProbe, selection };
}

/** The same mask with every listed block moved to the partial list with an all-ones bitmap. */
export function asPartial(m: BlockMask): BlockMask {
  const d = m._host('asPartial');
  const rows = m.B * m.H * m.qBlocks;
  const offsets = new Int32Array(rows + 1);
  const indices: number[] = [];
  for (let r = 0; r < rows; r++) {
    const merged = [
      ...d.fullIndices.subarray(d.fullOffsets[r]!, d.fullOffsets[r + 1]!),
      ...d.partialIndices.subarray(d.partialOffsets[r]!, d.partialOffsets[r + 1]!),
    ].sort((a, b) => a - b);
    indices.push(...merged);
    offsets[r + 1] = indices.length;
  }
  return ak.BlockMask.fromData(m.geometry, {
    fullOffsets: new Int32Array(rows + 1),
    fullIndices: new Int32Array(0),
    partialOffsets: offsets,
    partialIndices: Int32Array.from(indices),
    partialBits: new Uint32Array(indices.length * m.blockQ * m.wordsPerRow).fill(0xffffffff),
  });
}

/** Element density of a mask without materializing it densely (full blocks + bitmap popcounts). */
async function maskDensity(m: BlockMask): Promise<number> {
  const d = await m.host();
  let visible = 0;
  const rows = m.B * m.H * m.qBlocks;
  for (let r = 0; r < rows; r++) {
    const qb = r % m.qBlocks;
    const qRows = Math.min(m.blockQ, m.Nq - qb * m.blockQ);
    for (let i = d.fullOffsets[r]!; i < d.fullOffsets[r + 1]!; i++) visible += qRows * Math.min(m.blockK, m.Nk - d.fullIndices[i]! * m.blockK);
  }
  for (const w of d.partialBits) {
    let x = w >>> 0;
    while (x) {
      x &= x - 1;
      visible++;
    }
  }
  const total = m.B * m.H * m.Nq * m.Nk;
  return total === 0 ? 0 : visible / total;
}

/** The report as plain-text tables. */
export function formatBlockSparseReport(r: BlockSparseBenchReport): string {
  const out: string[] = [];
  const { B, N, H, D, block } = r.shape;
  out.push(
    `block-sparse attention: cpu ${r.isa}, ${r.threads} threads; B=${B} N=${N} H=${H} D=${D}, blocks ${block}x${block}; ` +
      `${r.statistic === 'min' ? 'fastest' : 'median'} of ${r.repeats} runs after ${r.warmup} warm-up (interleaved rounds)`,
  );
  if (r.density.length) {
    const rows = [['dtype', 'density', 'sparse fwd ms', 'dense fwd ms', 'fwd speedup', 'sparse bwd ms', 'dense bwd ms', 'bwd speedup', 'bwd/fwd']];
    for (const d of r.density)
      rows.push([
        d.dtype,
        `${fmt(100 * d.blockDensity)}%`,
        fmt(d.sparseFwdMs),
        fmt(d.denseFwdMs),
        `${fmt(d.speedupFwd)}x`,
        d.sparseBwdMs === null ? '-' : fmt(d.sparseBwdMs),
        d.denseBwdMs === null ? '-' : fmt(d.denseBwdMs),
        d.speedupBwd === null ? '-' : `${fmt(d.speedupBwd)}x`,
        d.bwdOverFwd === null ? '-' : fmt(d.bwdOverFwd),
      ]);
    out.push('', formatTable(rows, new Set([1, 2, 3, 4, 5, 6, 7, 8])));
  }
  for (const p of r.partialProbe)
    out.push(
      `partial-tile path, ${p.dtype}: the ${fmt(100 * p.blockDensity)}% mask with its blocks listed as partial (all-ones bitmaps) ` +
        `takes ${fmt(p.partialMs)} ms vs ${fmt(p.fullMs)} ms as full blocks (${fmt(p.ratio)}x)`,
    );
  if (r.selection.length) {
    const rows = [['op', 'config', 'dtype', 'build ms', 'attention fwd ms', 'build/attention', 'block density', 'density', 'dense causal fwd ms']];
    for (const s of r.selection)
      rows.push([
        s.op,
        s.config,
        s.dtype,
        fmt(s.buildMs),
        fmt(s.attentionMs),
        `${fmt(100 * s.fraction)}%`,
        `${fmt(100 * s.blockDensity)}%`,
        `${fmt(100 * s.density)}%`,
        fmt(s.denseCausalMs),
      ]);
    out.push('', formatTable(rows, new Set([3, 4, 5, 6, 7, 8])));
  }
  return out.join('\n');
}
