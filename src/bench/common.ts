/**
 * Shared pieces of the benchmarks: timing statistics, the FLOP convention of DESIGN §10, the
 * (estimated) machine peak, error metrics for the validation that precedes every timing, and the
 * plain-text table the CLI prints.
 */

/** Median of a non-empty list of numbers. */
export function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 === 1 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

/** Milliseconds elapsed since `t0` (a `process.hrtime.bigint()` reading). */
export function msSince(t0: bigint): number {
  return Number(process.hrtime.bigint() - t0) / 1e6;
}

/**
 * Which multiply-add unit bounds a kernel: float32 FMA, the bfloat16 pair dot product (vdpbf16ps),
 * or AMX tiles (TDPBF16PS).
 */
export type ComputeKind = 'fp32-fma' | 'bf16-dot' | 'amx-bf16';

/**
 * Peak GFLOP/s per thread by CPU kernel level and compute kind: an ESTIMATE, measured on the
 * reference machine (2-core Sapphire Rapids VM) with a throughput loop of independent instructions
 * (24 accumulators, one instruction kind, 1 thread; the same with 2 processes at once):
 * vfmadd231ps zmm 7.5 G/s = 240 GFLOP/s, vdpbf16ps zmm 1.9 G/s = 120 GFLOP/s (half the FMA rate on
 * this CPU), tdpbf16ps 16x16x32 about 3270 GFLOP/s. Other CPUs and clocks differ; levels without an
 * entry have no estimate. (The issue text quoted fp32 ≈ 230 and bf16-dot ≈ 465 GFLOP/s for 2
 * threads; the measurement above disagrees, see docs/cpu-backend.md.)
 */
export const PEAK_GFLOPS_PER_THREAD: Readonly<Record<string, Partial<Record<ComputeKind, number>>>> = {
  avx512: { 'fp32-fma': 240 },
  avx512bf16: { 'fp32-fma': 240, 'bf16-dot': 120 },
  amx: { 'fp32-fma': 240, 'amx-bf16': 3270 },
};

/** Estimated peak GFLOP/s for `threads` threads on kernel level `isa`, or null when unknown. */
export function peakGflops(isa: string, kind: ComputeKind, threads: number): number | null {
  const perThread = PEAK_GFLOPS_PER_THREAD[isa]?.[kind];
  return perThread === undefined ? null : perThread * threads;
}

/**
 * Largest |x - ref| and largest |ref| over the finite reference entries. Non-finite reference
 * entries (an LSE of -Infinity for an empty row) must be matched exactly; any mismatch, a
 * non-finite x where the reference is finite, or a length mismatch gives err = Infinity.
 */
function maxDiff(x: ArrayLike<number>, ref: ArrayLike<number>): { err: number; scale: number } {
  if (x.length !== ref.length) return { err: Infinity, scale: 0 };
  let err = 0;
  let scale = 0;
  for (let i = 0; i < ref.length; i++) {
    const r = ref[i]!;
    const v = x[i]!;
    if (!Number.isFinite(r)) {
      if (v !== r) return { err: Infinity, scale };
      continue;
    }
    if (!Number.isFinite(v)) return { err: Infinity, scale };
    err = Math.max(err, Math.abs(v - r));
    scale = Math.max(scale, Math.abs(r));
  }
  return { err, scale };
}

/** Error relative to the reference's scale: max |x - ref| / max |ref|. */
export function relativeMaxError(x: ArrayLike<number>, ref: ArrayLike<number>): number {
  const { err, scale } = maxDiff(x, ref);
  return scale === 0 ? err : err / scale;
}

/** Largest absolute difference. */
export function absMaxError(x: ArrayLike<number>, ref: ArrayLike<number>): number {
  return maxDiff(x, ref).err;
}

/** A plain-text table: the first row is the header; columns listed in `right` align right. */
export function formatTable(rows: readonly (readonly string[])[], right: ReadonlySet<number>): string {
  const widths = rows[0]!.map((_, c) => Math.max(...rows.map((r) => (r[c] ?? '').length)));
  const line = (r: readonly string[]) =>
    r
      .map((cell, c) => (right.has(c) ? cell.padStart(widths[c]!) : cell.padEnd(widths[c]!)))
      .join('  ')
      .trimEnd();
  const [head, ...body] = rows;
  return [line(head!), widths.map((w) => '-'.repeat(w)).join('  '), ...body.map(line)].join('\n');
}

/** A number with `digits` significant digits, without exponent notation for the usual ranges. */
export function fmt(x: number, digits = 3): string {
  if (!Number.isFinite(x)) return String(x);
  if (x === 0) return '0';
  const mag = Math.floor(Math.log10(Math.abs(x)));
  const decimals = Math.max(0, digits - 1 - mag);
  return x.toFixed(Math.min(decimals, 6));
}
