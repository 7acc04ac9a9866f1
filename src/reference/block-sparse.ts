/**
 * Float64 reference for block-sparse attention: dense masked attention (the dense reference, itself
 * checked by finite differences) with visibility read from the mask's dense form
 * [B|1, H|1, Nq, Nk] (BlockMask.toDense()).
 */
import { referenceAttention, referenceAttentionBackward, type RefForward, type RefGrads, type RefProblem } from './attention.js';

/** A block mask's dense form (BlockMask.toDense()) and its B and H extents. */
export interface RefDenseMask {
  /** [B|1, H|1, Nq, Nk], 1 = visible */
  data: ArrayLike<number>;
  B: number;
  H: number;
}

function allows(p: RefProblem, m: RefDenseMask) {
  return (i: number, j: number, b: number, h: number) => m.data[(((b % m.B) * m.H + (h % m.H)) * p.Nq + i) * p.Nk + j] === 1;
}

/** Block-sparse attention: dense attention with visibility read from the dense mask. */
export function referenceBlockSparse(p: RefProblem, mask: RefDenseMask, scale?: number): RefForward {
  return referenceAttention(p, { scale, allows: allows(p, mask) });
}

/** Gradients of referenceBlockSparse (the dense backward under the same mask). */
export function referenceBlockSparseBackward(p: RefProblem, mask: RefDenseMask, dOut: ArrayLike<number>, dLse?: ArrayLike<number>, scale?: number): RefGrads {
  return referenceAttentionBackward(p, dOut, dLse, { scale, allows: allows(p, mask) });
}
