/**
 * Neighborhood attention (na1d / na2d / na3d) through the public API: the tile simulator behind
 * `attnkit sim`, and the benchmark behind `attnkit bench --op na1d|na2d|na3d`.
 *
 * Simulator: for a problem and a tile shape, `neighborhoodPlan` walks the tile pairs the kernel
 * visits (the policy's key-tile lists, Skip pairs dropped) and counts Full and Partial pairs and the
 * visible (query, key) pairs. Two upper bounds of the speedup over dense attention on the same
 * tokens follow: the FLOP-ratio bound N^2 / visible (only useful work), and the tile-level bound
 * densePairs / (fullPairs + partialPairs) (a tile pair costs the same whatever its mask, dense
 * attention visits ceil(N/64)^2 of them). A configuration is fully block-sparse when no visited
 * pair is Partial: no element masking at all.
 *
 * Benchmark: validation first (a small instance with the same kind of options, same dtype, head
 * dim and tile shape, against the float64 reference; backward too when timed); then, per
 * configuration, one warm-up and `repeats` timed runs of the NA forward (and backward), and the same
 * for dense `attention` on the same tokens ([B, N = prod(input), H, D]). Dense runs that take long
 * (N = 32768: seconds each) stop after a time budget, with at least one timed run, and a warm-up
 * that alone exceeds the budget counts as that run; the report says how many. Dense timings are shared between configurations of the same tokens. FLOP by the
 * DESIGN §10 convention: forward 4 * visible pairs * D per (batch, head), backward 2.5 x forward.
 */
import * as ak from '../index.js';
import type { FloatDType, NaParams, NeighborhoodOptions, Tensor } from '../index.js';
import { absMaxError, median, msSince, relativeMaxError } from './common.js';
import { TOLERANCES, type Pass } from './attention.js';

export type NaOp = 'na1d' | 'na2d' | 'na3d';
export const NA_OPS: readonly NaOp[] = ['na1d', 'na2d', 'na3d'];
export const rankOf = (op: NaOp): 1 | 2 | 3 => (op === 'na1d' ? 1 : op === 'na2d' ? 2 : 3);

/** A neighborhood problem without the tensors: per-axis arrays of length rank. */
export interface NaProblem {
  op: NaOp;
  input: number[];
  kernel: number[];
  stride: number[];
  dilation: number[];
  causal: boolean[];
}

const prod = (xs: readonly number[]) => xs.reduce((a, b) => a * b, 1);

/**
 * NATTEN's argument rules with the axis and the values in the message (the library checks the same
 * when the op is called; the simulator calls only the planner, which checks without names).
 */
export function checkProblem(cmd: string, p: NaProblem): void {
  const R = rankOf(p.op);
  for (const [name, v] of [['input', p.input], ['kernel', p.kernel], ['stride', p.stride], ['dilation', p.dilation], ['causal', p.causal]] as const)
    if (v.length !== R) throw new Error(`${cmd}: expected '--${name}' to have ${R} entries for ${p.op} (or one for every axis), received ${v.length}`);
  for (let a = 0; a < R; a++) {
    if (p.kernel[a]! < 2) throw new Error(`${cmd}: expected '--kernel' to be > 1 on axis ${a}, received ${p.kernel[a]}`);
    if (p.stride[a]! > p.kernel[a]!)
      throw new Error(`${cmd}: expected '--stride' to be <= the kernel size ${p.kernel[a]} on axis ${a}, received ${p.stride[a]}`);
    if (p.kernel[a]! * p.dilation[a]! > p.input[a]!)
      throw new Error(
        `${cmd}: expected '--kernel' times '--dilation' to be <= the input size ${p.input[a]} on axis ${a}, ` +
          `received ${p.kernel[a]} x ${p.dilation[a]} = ${p.kernel[a]! * p.dilation[a]!}`,
      );
  }
}

const naParams = (p: NaProblem, tile: number[]): NaParams => ({
  rank: rankOf(p.op),
  size: p.input,
  kernel: p.kernel,
  stride: p.stride,
  dilation: p.dilation,
  causal: p.causal,
  tile,
});

// ------------------------------------------------------------------ simulator

export interface TileSim {
  tile: number[];
  densePairs: number;
  fullPairs: number;
  partialPairs: number;
  /** densePairs / (fullPairs + partialPairs) */
  tileBound: number;
  fullyBlockSparse: boolean;
}

export interface SimReport extends NaProblem {
  tokens: number;
  /** Visible (query, key) pairs per batch and head. */
  visible: number;
  /** N^2 / visible */
  flopBound: number;
  /** The tile shape the kernel uses (chooseTileShape), unless one was asked for. */
  chosenTile: number[];
  /** The tile asked for, or the chosen one. */
  selected: TileSim;
  /** Every candidate tile shape (only when no tile was asked for). */
  candidates: TileSim[];
}

/**
 * Tile shapes of 64 tokens, a power of two per axis, no entry longer than its axis rounded up to a
 * power of two (the set chooseTileShape picks from).
 */
export function tileCandidates(input: readonly number[]): number[][] {
  const out: number[][] = [];
  const rec = (prefix: number[], left: number) => {
    if (prefix.length === input.length - 1) {
      out.push([...prefix, left]);
      return;
    }
    for (let t = 1; t <= left; t *= 2) rec([...prefix, t], left / t);
  };
  rec([], 64);
  const fits = out.filter((t) => t.every((x, a) => x <= Math.max(1, 2 ** Math.ceil(Math.log2(input[a]!)))));
  return fits.length > 0 ? fits : out;
}

export function simulateTile(p: NaProblem, tile: number[]): TileSim & { visible: number } {
  const plan = ak.neighborhoodPlan(naParams(p, tile));
  const visited = plan.fullPairs + plan.partialPairs;
  return {
    tile,
    densePairs: plan.densePairs,
    fullPairs: plan.fullPairs,
    partialPairs: plan.partialPairs,
    tileBound: plan.densePairs / visited,
    fullyBlockSparse: plan.partialPairs === 0,
    visible: plan.visible,
  };
}

/** What `attnkit sim` prints. */
export function simulate(p: NaProblem, tile?: number[]): SimReport {
  checkProblem('sim', p);
  const R = rankOf(p.op);
  if (tile && (tile.length !== R || prod(tile) !== 64))
    throw new Error(`sim: expected '--tile' to have ${R} entries holding 64 tokens (their product), received ${tile.join(',')}`);
  const chosenTile = ak.chooseTileShape({ rank: R, size: p.input, kernel: p.kernel, stride: p.stride, dilation: p.dilation, causal: p.causal });
  const { visible, ...selected } = simulateTile(p, tile ?? chosenTile);
  const candidates = tile
    ? []
    : tileCandidates(p.input).map((t) => {
        const { visible: _v, ...s } = simulateTile(p, t);
        return s;
      });
  const tokens = prod(p.input);
  return { ...p, tokens, visible, flopBound: (tokens * tokens) / visible, chosenTile, selected, candidates };
}

// ------------------------------------------------------------------ benchmark

export interface NaBenchConfig extends NaProblem {
  B: number;
  H: number;
  D: number;
  /** Explicit tile shape; default: chooseTileShape's. */
  tile?: number[];
}

/** The configurations (DESIGN / issue 3): a NAT stage, a larger 2-D layer, long 1-D, video. */
export const DEFAULT_CONFIGS: Readonly<Record<NaOp, readonly NaBenchConfig[]>> = {
  na1d: [
    { op: 'na1d', input: [32768], kernel: [2048], stride: [1], dilation: [1], causal: [false], B: 1, H: 4, D: 64 },
    // the smallest stride that makes 32K / w2048 fully block-sparse with 64-token tiles (anchor §3.9)
    { op: 'na1d', input: [32768], kernel: [2048], stride: [256], dilation: [1], causal: [false], B: 1, H: 4, D: 64 },
  ],
  na2d: [
    { op: 'na2d', input: [56, 56], kernel: [7, 7], stride: [1, 1], dilation: [1, 1], causal: [false, false], B: 1, H: 4, D: 32 },
    { op: 'na2d', input: [128, 128], kernel: [13, 13], stride: [1, 1], dilation: [1, 1], causal: [false, false], B: 1, H: 4, D: 64 },
  ],
  na3d: [
    { op: 'na3d', input: [16, 32, 32], kernel: [3, 7, 7], stride: [1, 1, 1], dilation: [1, 1, 1], causal: [false, false, false], B: 1, H: 4, D: 64 },
  ],
};

export interface NaValidation {
  op: NaOp;
  dtype: FloatDType;
  input: number[];
  kernel: number[];
  stride: number[];
  dilation: number[];
  causal: boolean[];
  tile: number[];
  headDim: number;
  backward: boolean;
  ok: boolean;
  errors: Record<string, number>;
  tolerances: Record<string, number>;
}

export interface Timing {
  medianMs: number;
  minMs: number;
  repeats: number;
  gflops: number;
}

export interface NaTiming extends NaProblem {
  B: number;
  H: number;
  D: number;
  dtype: FloatDType;
  tile: number[];
  pass: Pass;
  visible: number;
  /** FLOP of one NA run (visible pairs only) */
  flop: number;
  na: Timing;
  /** Dense `attention` on the same tokens; gflops counts its own N^2 pairs. */
  dense: Timing;
  /** dense median / NA median */
  speedup: number;
  flopBound: number;
  tileBound: number;
  fullyBlockSparse: boolean;
  /** speedup / tileBound */
  ratio: number;
  /**
   * The same from the fastest run of each (dense min / NA min, over the tile bound): on a shared
   * machine the least disturbed runs, closer to what the kernels do alone.
   */
  ratioBest: number;
  /** backward only: NA backward median / NA forward median */
  backwardOverForward: number | null;
}

export interface NaBenchReport {
  isa: string;
  threads: number;
  validation: NaValidation[];
  results: NaTiming[];
}

export class NaValidationFailure extends Error {
  readonly validation: NaValidation[];
  constructor(validation: NaValidation[]) {
    const bad = validation.filter((v) => !v.ok);
    super(
      'validation against the float64 reference failed, refusing to report timings: ' +
        bad
          .map((v) => {
            const what = Object.keys(v.errors)
              .filter((k) => !(v.errors[k]! <= v.tolerances[k]!))
              .map((k) => `${k} error ${v.errors[k]!.toExponential(2)} > ${v.tolerances[k]!.toExponential(0)}`)
              .join(', ');
            return `${v.op} ${v.dtype} input ${v.input} kernel ${v.kernel} tile ${v.tile}: ${what}`;
          })
          .join('; '),
    );
    this.name = 'NaValidationFailure';
    this.validation = validation;
  }
}

/**
 * A small instance of a configuration for validation: same rank, dtype, head dim, tile shape, causal
 * flags; kernel, stride and dilation shrunk so the float64 reference stays fast (O(N^2)).
 */
export function validationProblem(c: NaBenchConfig): NaProblem {
  const R = rankOf(c.op);
  const kmax = R === 1 ? 33 : R === 2 ? 7 : 5;
  const kernel = c.kernel.map((k) => Math.min(k, kmax));
  const dilation = c.dilation.map((d) => Math.min(d, 2));
  const stride = c.stride.map((s, a) => Math.max(1, Math.min(s, kernel[a]!)));
  const input = c.input.map((L, a) => Math.min(L, kernel[a]! * dilation[a]! + (R === 1 ? 100 : 6)));
  return { op: c.op, input, kernel, stride, dilation, causal: [...c.causal] };
}

function opOf(op: NaOp) {
  return op === 'na1d' ? ak.na1d : op === 'na2d' ? ak.na2d : ak.na3d;
}

const naOptions = (p: NaProblem, tile: number[]): NeighborhoodOptions => ({
  kernelSize: p.kernel,
  stride: p.stride,
  dilation: p.dilation,
  causal: p.causal,
  tileShape: tile,
});

/** Compares a small instance (and its backward when asked) with the float64 reference. */
export async function validateNa(c: NaBenchConfig, dtype: FloatDType, tile: number[], backward: boolean): Promise<NaValidation> {
  const p = validationProblem(c);
  const B = 1;
  const H = 2;
  const D = c.D;
  const shape = [B, ...p.input, H, D];
  const q = ak.randn(shape, { dtype, seed: 21 });
  const k = ak.randn(shape, { dtype, seed: 22 });
  const v = ak.randn(shape, { dtype, seed: 23 });
  const dOut = backward ? ak.randn(shape, { dtype, seed: 24 }) : null;
  const owned: Tensor[] = [q, k, v];
  if (dOut) owned.push(dOut);
  try {
    const r = opOf(c.op)(q, k, v, naOptions(p, tile));
    owned.push(r.out, r.lse);
    const g = dOut ? r.backward(dOut) : null;
    if (g) owned.push(g.dq, g.dk, g.dv);
    const [qa, ka, va, out, lse] = await Promise.all([q, k, v, r.out, r.lse].map((t) => t.toArray()));
    const prob = { B, H, Hkv: H, D, Dv: D, q: qa!, k: ka!, v: va! };
    const rp = { size: p.input, kernelSize: p.kernel, stride: p.stride, dilation: p.dilation, causal: p.causal };
    const ref = ak.reference.referenceNeighborhood(prob, rp);
    const tol = TOLERANCES[dtype];
    const errors: Record<string, number> = { out: relativeMaxError(out!, ref.out), lse: absMaxError(lse!, ref.lse) };
    const tolerances: Record<string, number> = { out: tol.out, lse: tol.lse };
    if (g && dOut) {
      const [dq, dk, dv, dOa] = await Promise.all([g.dq, g.dk, g.dv, dOut].map((t) => t.toArray()));
      const rg = ak.reference.referenceNeighborhoodBackward(prob, rp, dOa!);
      errors.dq = relativeMaxError(dq!, rg.dq);
      errors.dk = relativeMaxError(dk!, rg.dk);
      errors.dv = relativeMaxError(dv!, rg.dv);
      tolerances.dq = tolerances.dk = tolerances.dv = tol.grad;
    }
    const ok = Object.keys(errors).every((key) => errors[key]! <= tolerances[key]!);
    return { ...p, dtype, tile, headDim: D, backward, ok, errors, tolerances };
  } finally {
    for (const t of owned) t.dispose();
  }
}

export interface NaBenchOptions {
  configs: readonly NaBenchConfig[];
  dtypes: readonly FloatDType[];
  backward: boolean;
  /** Timed NA runs per measurement (the median is reported). */
  repeats: number;
  warmup: number;
  /**
   * Dense attention: timed runs stop once they have taken this many milliseconds (at least one
   * timed run, at most `repeats`).
   */
  denseBudgetMs: number;
  onStep?: (label: string) => void;
}

/**
 * Times `run` (enqueue + synchronize): `warmup` untimed runs, then up to `repeats` timed ones, stopping
 * once the timed runs have taken `budgetMs`. A warm-up run that alone exceeds the budget is kept as
 * the one timed run (dense attention at N = 32768: a second run would only repeat seconds of work
 * whose first-touch costs are negligible at that size).
 */
async function time(run: () => () => void, warmup: number, repeats: number, budgetMs = Infinity): Promise<number[]> {
  const times: number[] = [];
  let spent = 0;
  for (let i = 0; i < warmup + repeats; i++) {
    const t0 = process.hrtime.bigint();
    const dispose = run();
    await ak.synchronize();
    const ms = msSince(t0);
    dispose();
    if (i < warmup && ms >= budgetMs) return [ms];
    if (i >= warmup) {
      times.push(ms);
      spent += ms;
      if (spent >= budgetMs) break;
    }
  }
  return times;
}

const timing = (times: number[], flop: number): Timing => {
  const med = median(times);
  return { medianMs: med, minMs: Math.min(...times), repeats: times.length, gflops: flop / (med * 1e6) };
};

/** Validates every (config, dtype), then times them. Throws NaValidationFailure before timing. */
export async function benchNeighborhood(o: NaBenchOptions): Promise<NaBenchReport> {
  const step = o.onStep ?? (() => {});
  const { isa, threads } = ak.info().cpu;
  const tiles = o.configs.map(
    (c) => c.tile ?? ak.chooseTileShape({ rank: rankOf(c.op), size: c.input, kernel: c.kernel, stride: c.stride, dilation: c.dilation, causal: c.causal }),
  );

  const validation: NaValidation[] = [];
  for (const [ci, c] of o.configs.entries())
    for (const dtype of o.dtypes) {
      validation.push(await validateNa(c, dtype, tiles[ci]!, o.backward));
      step(`validate ${c.op} ${dtype}`);
    }
  if (validation.some((v) => !v.ok)) throw new NaValidationFailure(validation);

  const denseCache = new Map<string, Timing>();
  const results: NaTiming[] = [];
  for (const [ci, c] of o.configs.entries()) {
    const tile = tiles[ci]!;
    const sim = simulateTile(c, tile);
    const N = prod(c.input);
    const fwdFlop = 4 * c.B * c.H * sim.visible * c.D;
    const denseFlop = 4 * c.B * c.H * N * N * c.D;
    for (const dtype of o.dtypes) {
      const qs = [c.B, ...c.input, c.H, c.D];
      const q = ak.randn(qs, { dtype, seed: 1 });
      const k = ak.randn(qs, { dtype, seed: 2 });
      const v = ak.randn(qs, { dtype, seed: 3 });
      const dOut = o.backward ? ak.randn(qs, { dtype, seed: 4 }) : null;
      // the same tokens as [B, N, H, D] for dense attention (views)
      const flat = (t: Tensor) => t.reshape([c.B, N, c.H, c.D]);
      await ak.synchronize();
      const label = `${c.op} ${c.input.join('x')} k=${c.kernel.join('x')} ${dtype}`;
      try {
        const opts = naOptions(c, tile);
        const naFwd = await time(() => {
          const r = opOf(c.op)(q, k, v, opts);
          step(`${label} forward`);
          return () => (r.out.dispose(), r.lse.dispose());
        }, o.warmup, o.repeats);
        const denseKey = (pass: Pass) => `${c.B},${N},${c.H},${c.D},${dtype},${pass}`;
        const denseFwd =
          denseCache.get(denseKey('forward')) ??
          timing(
            await time(() => {
              const r = ak.attention(flat(q), flat(k), flat(v));
              step(`${label} dense forward`);
              return () => (r.out.dispose(), r.lse.dispose());
            }, o.warmup, o.repeats, o.denseBudgetMs),
            denseFlop,
          );
        denseCache.set(denseKey('forward'), denseFwd);
        const record = (pass: Pass, na: Timing, dense: Timing, fwdMs: number | null) => {
          const speedup = dense.medianMs / na.medianMs;
          results.push({
            ...c,
            input: [...c.input],
            dtype,
            tile,
            pass,
            visible: sim.visible,
            flop: pass === 'forward' ? fwdFlop : 2.5 * fwdFlop,
            na,
            dense,
            speedup,
            flopBound: (N * N) / sim.visible,
            tileBound: sim.tileBound,
            fullyBlockSparse: sim.fullyBlockSparse,
            ratio: speedup / sim.tileBound,
            ratioBest: dense.minMs / na.minMs / sim.tileBound,
            backwardOverForward: fwdMs === null ? null : na.medianMs / fwdMs,
          });
        };
        const fwdT = timing(naFwd, fwdFlop);
        record('forward', fwdT, denseFwd, null);

        if (dOut) {
          const r = opOf(c.op)(q, k, v, opts);
          const naBwd = await time(() => {
            const g = r.backward(dOut);
            step(`${label} backward`);
            return () => (g.dq.dispose(), g.dk.dispose(), g.dv.dispose());
          }, o.warmup, o.repeats);
          r.out.dispose();
          r.lse.dispose();
          let denseBwd = denseCache.get(denseKey('backward'));
          if (!denseBwd) {
            const d = ak.attention(flat(q), flat(k), flat(v));
            denseBwd = timing(
              await time(() => {
                const g = d.backward(flat(dOut));
                step(`${label} dense backward`);
                return () => (g.dq.dispose(), g.dk.dispose(), g.dv.dispose());
              }, o.warmup, o.repeats, o.denseBudgetMs),
              2.5 * denseFlop,
            );
            d.out.dispose();
            d.lse.dispose();
            denseCache.set(denseKey('backward'), denseBwd);
          }
          record('backward', timing(naBwd, 2.5 * fwdFlop), denseBwd, fwdT.medianMs);
        }
      } finally {
        for (const t of [q, k, v, dOut]) t?.dispose();
      }
    }
  }
  return { isa, threads, validation, results };
}

/** Number of onStep calls at most (dense runs may stop early), for a progress bar. */
export function countNaSteps(o: NaBenchOptions): number {
  const perPass = (o.warmup + o.repeats) * 2;
  return o.configs.length * o.dtypes.length * (1 + perPass * (o.backward ? 2 : 1));
}
