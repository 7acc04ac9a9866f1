/**
 * Float64 references for the block selection ops (docs/block-sparse.md): MoBA gating (`mobaMask`)
 * and XAttention antidiagonal scoring with cumulative-mass threshold selection (`xattentionMask`),
 * written from the semantics with plain loops. Each returns the scores, the selection and the dense
 * visibility [B, H, Nq, Nk] that the op's BlockMask must reproduce, plus a `margin` per decision
 * (how far the inputs are from changing the selection, relative): a float32 implementation may
 * legitimately decide otherwise only where the margin is below float32 rounding, and an exact tie
 * (margin 0) must follow the tie rule. `scores` may be given (e.g. the op's own float32 scores) to
 * check the selection logic exactly.
 *
 * Layouts as the ops': q [B, Nq, H, D], k [B, Nk, Hkv, D], flat row-major; query head h reads kv
 * head floor(h / (H / Hkv)).
 */

export interface RefSelectDims {
  B: number;
  Nq: number;
  Nk: number;
  H: number;
  Hkv: number;
  D: number;
}

// ------------------------------------------------------------------ MoBA

/** Options of the MoBA selection reference (those of mobaMask). */
export interface RefMobaOptions {
  /** Key block (chunk) size C. */
  blockSize: number;
  /** Blocks per query token, counting its own block when causal. */
  topK: number;
  /** Default true. */
  causal?: boolean;
  /** Use these gate scores [B, Nq, H, nBlocks] instead of computing them. */
  scores?: ArrayLike<number>;
}

/** What the MoBA reference selects, with the margin that tells how close the choice was. */
export interface RefMobaSelection {
  /** ceil(Nk / blockSize) */
  nBlocks: number;
  /** `[B, Nq, H, nBlocks]`: <q_t, mean(K_block)>, no scaling, no masking. */
  scores: Float64Array;
  /** `[B, Nq, H, topK]`: own block first (causal), then by decreasing score, ties to the lower index; -1 = unused. */
  selected: Int32Array;
  /**
   * `[B, Nq, H]`: smallest score gap between neighbours in the competing order up to the first
   * unselected block, relative to max(1, max |score|) of the token (0 = an exact tie decided by
   * the tie rule; Infinity = no choice was made).
   */
  margin: Float64Array;
  /** `[B, H, Nq, Nk]`: 1 = visible. */
  visible: Uint8Array;
}

/**
 * MoBA gating:
 *   Kbar_j = mean of k over key block j's real tokens (the tail block over its length);
 *   s_{t,j} = <q_t, Kbar_j>;
 *   query t is aligned at a = t + Nk - Nq;
 *   causal: its own block o = floor(a / C) (when 0 <= a) is always selected first; the competitors
 *     are the complete past blocks j ((j + 1) C <= a), topK - 1 of them are taken by decreasing
 *     score, ties to the lower index; key x is visible iff its block is selected and x <= a;
 *   non-causal: the top min(topK, nBlocks) blocks over all blocks, no forcing; x visible iff its
 *     block is selected.
 */
export function referenceMobaSelect(
  q: ArrayLike<number>,
  k: ArrayLike<number>,
  dims: RefSelectDims,
  opts: RefMobaOptions,
): RefMobaSelection {
  const { B, Nq, Nk, H, Hkv, D } = dims;
  const C = opts.blockSize;
  const topK = opts.topK;
  const causal = opts.causal ?? true;
  const nBlocks = Math.ceil(Nk / C);
  const group = H / Hkv;
  let scores: Float64Array;
  if (opts.scores) {
    if (opts.scores.length !== B * Nq * H * nBlocks) throw new Error(`scores: expected ${B * Nq * H * nBlocks} entries, got ${opts.scores.length}`);
    scores = Float64Array.from(opts.scores);
  } else {
    // block means per (b, kv head, block)
    const kbar = new Float64Array(B * Hkv * nBlocks * D);
    for (let b = 0; b < B; b++)
      for (let hk = 0; hk < Hkv; hk++)
        for (let j = 0; j < nBlocks; j++) {
          const x0 = j * C;
          const x1 = Math.min(Nk, x0 + C);
          const o = ((b * Hkv + hk) * nBlocks + j) * D;
          for (let x = x0; x < x1; x++) for (let d = 0; d < D; d++) kbar[o + d]! += k[((b * Nk + x) * Hkv + hk) * D + d]!;
          for (let d = 0; d < D; d++) kbar[o + d]! /= x1 - x0;
        }
    scores = new Float64Array(B * Nq * H * nBlocks);
    for (let b = 0; b < B; b++)
      for (let t = 0; t < Nq; t++)
        for (let h = 0; h < H; h++) {
          const hk = Math.floor(h / group);
          const qo = ((b * Nq + t) * H + h) * D;
          for (let j = 0; j < nBlocks; j++) {
            const ko = ((b * Hkv + hk) * nBlocks + j) * D;
            let s = 0;
            for (let d = 0; d < D; d++) s += q[qo + d]! * kbar[ko + d]!;
            scores[((b * Nq + t) * H + h) * nBlocks + j] = s;
          }
        }
  }
  const selected = new Int32Array(B * Nq * H * topK).fill(-1);
  const margin = new Float64Array(B * Nq * H).fill(Infinity);
  for (let b = 0; b < B; b++)
    for (let t = 0; t < Nq; t++)
      for (let h = 0; h < H; h++) {
        const row = (b * Nq + t) * H + h;
        const s = (j: number) => scores[row * nBlocks + j]!;
        const a = t + Nk - Nq;
        const out: number[] = [];
        let candidates: number[];
        let slots = topK;
        if (causal) {
          if (a < 0) continue; // before every key: nothing selected
          out.push(Math.floor(a / C));
          slots--;
          candidates = [];
          for (let j = 0; (j + 1) * C <= a; j++) candidates.push(j);
        } else {
          candidates = Array.from({ length: nBlocks }, (_, j) => j);
        }
        candidates.sort((x, y) => s(y) - s(x) || x - y);
        const n = Math.min(slots, candidates.length);
        for (let i = 0; i < n; i++) out.push(candidates[i]!);
        out.forEach((j, i) => (selected[row * topK + i] = j));
        // margin over the decisions: the order of the taken blocks and the cut after them
        let scale = 1;
        for (let j = 0; j < nBlocks; j++) scale = Math.max(scale, Math.abs(s(j)));
        let m = Infinity;
        for (let i = 0; i + 1 < Math.min(candidates.length, n + 1); i++) m = Math.min(m, (s(candidates[i]!) - s(candidates[i + 1]!)) / scale);
        margin[row] = m;
      }
  return { nBlocks, scores, selected, margin, visible: mobaVisibility(selected, dims, { blockSize: C, topK, causal }) };
}

/** Dense visibility [B, H, Nq, Nk] of a MoBA selection [B, Nq, H, topK] (see referenceMobaSelect). */
export function mobaVisibility(
  selected: ArrayLike<number>,
  dims: Pick<RefSelectDims, 'B' | 'Nq' | 'Nk' | 'H'>,
  opts: { blockSize: number; topK: number; causal?: boolean },
): Uint8Array {
  const { B, Nq, Nk, H } = dims;
  const C = opts.blockSize;
  const causal = opts.causal ?? true;
  const vis = new Uint8Array(B * H * Nq * Nk);
  for (let b = 0; b < B; b++)
    for (let t = 0; t < Nq; t++)
      for (let h = 0; h < H; h++) {
        const a = t + Nk - Nq;
        const o = ((b * H + h) * Nq + t) * Nk;
        for (let i = 0; i < opts.topK; i++) {
          const j = selected[((b * Nq + t) * H + h) * opts.topK + i]!;
          if (j < 0) continue;
          for (let x = j * C; x < Math.min(Nk, (j + 1) * C); x++) if (!causal || x <= a) vis[o + x] = 1;
        }
      }
  return vis;
}

// ------------------------------------------------------------------ XAttention

/** Options of the XAttention selection reference (those of xattentionMask). */
export interface RefXattnOptions {
  /** Antidiagonal stride S (a power of two dividing blockSize). */
  stride: number;
  /** Fraction of each query block's mass to keep. */
  threshold: number;
  /** Default 64. */
  blockSize?: number;
  /** Default true. */
  causal?: boolean;
  /** Use these block scores [B, H, Qb, Kb] instead of computing them. */
  scores?: ArrayLike<number>;
}

/** What the XAttention reference selects, with the margin that tells how close the choice was. */
export interface RefXattnSelection {
  /** ceil(Nq / blockSize), ceil(Nk / blockSize) */
  Qb: number;
  Kb: number;
  /** [B, H, Qb, Kb] block scores: sums of the reshaped softmax P over the block. */
  scores: Float64Array;
  /** [B, H, Qb, Kb] 1 = selected. */
  selected: Uint8Array;
  /**
   * `[B, H, Qb]`: distance from changing the selected set, relative to the row's total score: the
   * cumulative sums at the cut against the requirement, and the score gap at the cut (0 = exact
   * tie at the cut, decided by the tie rule; Infinity = no choice).
   */
  margin: Float64Array;
  /** [B, H, Nq, Nk] 1 = visible. */
  visible: Uint8Array;
}

/**
 * XAttention selection with stride S and block size Bs:
 *   reshaped rows t < ceil(Nq/S), columns u < ceil(Nk/S);
 *   A[t, u] = sum_{i<S} q[tS + S-1-i] . k[uS + i] / (sqrt(D) S), tokens past the end = zero vectors;
 *   causal: A[t, u] = -inf for u > t + (ceil(Nk/S) - ceil(Nq/S)) (a row with no column left has P = 0);
 *   P = softmax over u of each row;
 *   score[qb, kb] = sum over t with tS in query block qb, u with uS in key block kb of P[t, u];
 *   per (b, h, qb): forced = {0, diag} when causal, diag = qb + Kb - Qb clamped to [0, Kb - 1];
 *     required = threshold * sum_kb score[qb, kb]; the other blocks by decreasing score (ties to
 *     the lower index) are taken while (sum forced + sum taken so far) < required (so the block
 *     that crosses the requirement is taken); causal: blocks past diag are then dropped;
 *   element mask: the selected blocks, token-causal (j <= i + Nk - Nq) inside when causal.
 */
export function referenceXattentionSelect(
  q: ArrayLike<number>,
  k: ArrayLike<number>,
  dims: RefSelectDims,
  opts: RefXattnOptions,
): RefXattnSelection {
  const { B, Nq, Nk, H, Hkv, D } = dims;
  const S = opts.stride;
  const Bs = opts.blockSize ?? 64;
  const causal = opts.causal ?? true;
  const Qb = Math.ceil(Nq / Bs);
  const Kb = Math.ceil(Nk / Bs);
  const Tq = Math.ceil(Nq / S);
  const Tk = Math.ceil(Nk / S);
  const group = H / Hkv;
  let scores: Float64Array;
  if (opts.scores) {
    if (opts.scores.length !== B * H * Qb * Kb) throw new Error(`scores: expected ${B * H * Qb * Kb} entries, got ${opts.scores.length}`);
    scores = Float64Array.from(opts.scores);
  } else {
    scores = new Float64Array(B * H * Qb * Kb);
    const A = new Float64Array(Tk);
    const norm = Math.sqrt(D) * S;
    for (let b = 0; b < B; b++)
      for (let h = 0; h < H; h++) {
        const hk = Math.floor(h / group);
        for (let t = 0; t < Tq; t++) {
          let mx = -Infinity;
          for (let u = 0; u < Tk; u++) {
            if (causal && u > t + (Tk - Tq)) {
              A[u] = -Infinity;
              continue;
            }
            let acc = 0;
            for (let i = 0; i < S; i++) {
              const qi = t * S + S - 1 - i;
              const ki = u * S + i;
              if (qi >= Nq || ki >= Nk) continue; // zero vectors past the end
              const qo = ((b * Nq + qi) * H + h) * D;
              const ko = ((b * Nk + ki) * Hkv + hk) * D;
              for (let d = 0; d < D; d++) acc += q[qo + d]! * k[ko + d]!;
            }
            A[u] = acc / norm;
            mx = Math.max(mx, A[u]!);
          }
          if (mx === -Infinity) continue; // no column: no mass
          let sum = 0;
          for (let u = 0; u < Tk; u++) if (A[u] !== -Infinity) sum += Math.exp(A[u]! - mx);
          const qb = Math.floor((t * S) / Bs);
          for (let u = 0; u < Tk; u++) {
            if (A[u] === -Infinity) continue;
            const kb = Math.floor((u * S) / Bs);
            scores[((b * H + h) * Qb + qb) * Kb + kb]! += Math.exp(A[u]! - mx) / sum;
          }
        }
      }
  }
  const selected = new Uint8Array(B * H * Qb * Kb);
  const margin = new Float64Array(B * H * Qb).fill(Infinity);
  for (let bh = 0; bh < B * H; bh++)
    for (let qb = 0; qb < Qb; qb++) {
      const row = bh * Qb + qb;
      const s = (kb: number) => scores[row * Kb + kb]!;
      if (Kb === 0) continue;
      const diag = Math.min(Kb - 1, Math.max(0, qb + Kb - Qb));
      const forced = causal ? [...new Set([0, diag])] : [];
      let total = 0;
      for (let kb = 0; kb < Kb; kb++) total += s(kb);
      const required = opts.threshold * total;
      let sum = 0;
      for (const kb of forced) {
        selected[row * Kb + kb] = 1;
        sum += s(kb);
      }
      const cands = Array.from({ length: Kb }, (_, kb) => kb)
        .filter((kb) => !forced.includes(kb))
        .sort((x, y) => s(y) - s(x) || x - y);
      const before = sum;
      let m = 0;
      while (m < cands.length && sum < required) {
        selected[row * Kb + cands[m]!] = 1;
        sum += s(cands[m]!);
        m++;
      }
      // Margin: how close the decisions that change the final set were. Only candidates that
      // survive the causal drop matter: stopping one earlier removes cands[m - 1]; going on would
      // add the first surviving candidate j >= m iff cum[j] < required (cum never decreases);
      // swapping the blocks at the cut changes the set if both survive.
      if (total > 0) {
        const cum = [before];
        for (let i = 0; i < cands.length; i++) cum.push(cum[i]! + s(cands[i]!));
        const survives = (kb: number) => !causal || kb <= diag;
        let mg = Infinity;
        if (m > 0 && survives(cands[m - 1]!)) mg = Math.min(mg, Math.abs(cum[m - 1]! - required));
        let j = m;
        while (j < cands.length && !survives(cands[j]!)) j++;
        if (j < cands.length) mg = Math.min(mg, Math.abs(cum[j]! - required));
        if (m > 0 && j < cands.length && survives(cands[m - 1]!)) mg = Math.min(mg, s(cands[m - 1]!) - s(cands[j]!));
        margin[row] = mg / total;
      }
      if (causal) for (let kb = diag + 1; kb < Kb; kb++) selected[row * Kb + kb] = 0;
    }
  return { Qb, Kb, scores, selected, margin, visible: xattentionVisibility(selected, dims, { blockSize: Bs, causal }) };
}

/** Dense visibility [B, H, Nq, Nk] of an XAttention block selection [B, H, Qb, Kb]. */
export function xattentionVisibility(
  selected: ArrayLike<number>,
  dims: Pick<RefSelectDims, 'B' | 'Nq' | 'Nk' | 'H'>,
  opts: { blockSize?: number; causal?: boolean },
): Uint8Array {
  const { B, Nq, Nk, H } = dims;
  const Bs = opts.blockSize ?? 64;
  const causal = opts.causal ?? true;
  const Qb = Math.ceil(Nq / Bs);
  const Kb = Math.ceil(Nk / Bs);
  const vis = new Uint8Array(B * H * Nq * Nk);
  for (let bh = 0; bh < B * H; bh++)
    for (let i = 0; i < Nq; i++)
      for (let j = 0; j < Nk; j++) {
        if (causal && j > i + Nk - Nq) continue;
        if (selected[(bh * Qb + Math.floor(i / Bs)) * Kb + Math.floor(j / Bs)]) vis[(bh * Nq + i) * Nk + j] = 1;
      }
  return vis;
}
