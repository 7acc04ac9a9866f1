/**
 * Bad input (DESIGN §4) throws an AttnkitError at the call with a stable `code`, the `op`, the
 * `argument` where there is one, and a message that names the op, the argument and what was
 * expected. A failed call leaves its inputs intact and allocates nothing.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  AttnkitError,
  Stream,
  attention,
  attentionBackward,
  cuda,
  empty,
  memory,
  mergeAttention,
  mergeAttentionBackward,
  randn,
  synchronize,
  tensor,
  zeros,
  type Tensor,
} from '../src/index.ts';
import * as ak from '../src/index.ts';
import { root } from './fuzz/dist.ts';
import { documentedErrors } from './fuzz/errors-doc.ts';
import { expectError } from './fuzz/expect-error.ts';

const rnd = (shape: number[], seed: number, dtype: 'float32' | 'float16' | 'bfloat16' = 'float32') =>
  randn(shape, { seed, dtype });

/** q, k, v for attention: [B, N, H, D] / [B, N, Hkv, D] / [B, N, Hkv, Dv]. */
function qkv(B = 1, N = 4, H = 2, D = 8, Hkv = H, Dv = D) {
  return { q: rnd([B, N, H, D], 1), k: rnd([B, N, Hkv, D], 2), v: rnd([B, N, Hkv, Dv], 3) };
}

const disposeAll = (...ts: Tensor[]) => ts.forEach((t) => t.dispose());

describe('attention: shapes', () => {
  it('wrong rank (q rank 3)', () => {
    const { k, v } = qkv();
    const q = rnd([4, 2, 8], 9);
    expectError(() => attention(q, k, v), {
      code: 'ERR_ATTNKIT_SHAPE',
      op: 'attention',
      argument: 'q',
      message: "attention: expected 'q' to have rank 4 ([B, Nq, H, D]), received rank 3 [4, 2, 8]",
    });
    disposeAll(q, k, v);
  });

  it('wrong rank of k and v', () => {
    const { q, v } = qkv();
    const k5 = rnd([1, 1, 4, 2, 8], 9);
    expectError(() => attention(q, k5, v), {
      code: 'ERR_ATTNKIT_SHAPE',
      op: 'attention',
      argument: 'k',
      has: ["'k'", 'rank 4', '[B, Nk, Hkv, D]', 'rank 5'],
    });
    const k = rnd([1, 4, 2, 8], 2);
    const v2 = rnd([4, 16], 3);
    expectError(() => attention(q, k, v2), { code: 'ERR_ATTNKIT_SHAPE', op: 'attention', argument: 'v', has: ["'v'", 'rank 4', 'rank 2'] });
    disposeAll(q, v, k5, k, v2);
  });

  it("k's head dim differs from q's", () => {
    const { q, v } = qkv();
    const k = rnd([1, 4, 2, 16], 2);
    expectError(() => attention(q, k, v), {
      code: 'ERR_ATTNKIT_SHAPE',
      op: 'attention',
      argument: 'k',
      message: "attention: expected 'k' to have head dim 8 (as q's head dim), received 16",
    });
    disposeAll(q, k, v);
  });

  it("v's sequence length differs from k's", () => {
    const { q, k } = qkv();
    const v = rnd([1, 5, 2, 8], 3);
    expectError(() => attention(q, k, v), {
      code: 'ERR_ATTNKIT_SHAPE',
      op: 'attention',
      argument: 'v',
      message: "attention: expected 'v' to have sequence length 4 (as k's sequence length), received 5",
    });
    disposeAll(q, k, v);
  });

  it("v's head count differs from k's", () => {
    const { q, k } = qkv();
    const v = rnd([1, 4, 1, 8], 3);
    expectError(() => attention(q, k, v), {
      code: 'ERR_ATTNKIT_SHAPE',
      op: 'attention',
      argument: 'v',
      has: ["'v'", 'head count 2', '1'],
    });
    disposeAll(q, k, v);
  });

  it('batch mismatch', () => {
    const { q, v } = qkv();
    const k = rnd([2, 4, 2, 8], 2);
    expectError(() => attention(q, k, v), {
      code: 'ERR_ATTNKIT_SHAPE',
      op: 'attention',
      argument: 'k',
      message: "attention: expected 'k' to have batch size 1 (as q's batch), received 2",
    });
    const k1 = rnd([1, 4, 2, 8], 2);
    const v2 = rnd([3, 4, 2, 8], 3);
    expectError(() => attention(q, k1, v2), { code: 'ERR_ATTNKIT_SHAPE', op: 'attention', argument: 'v', has: ['batch size 1', 'received 3'] });
    disposeAll(q, k, v, k1, v2);
  });

  it('H not divisible by Hkv', () => {
    const { q, k, v } = qkv(1, 4, 4, 8, 3);
    expectError(() => attention(q, k, v), {
      code: 'ERR_ATTNKIT_SHAPE',
      op: 'attention',
      argument: 'k',
      message: "attention: expected 'k' to have a head count that divides q's 4 heads (GQA/MQA), received 3",
    });
    disposeAll(q, k, v);
  });

  it('zero heads or zero batch', () => {
    const q = zeros([1, 4, 0, 8]);
    const k = zeros([1, 4, 0, 8]);
    expectError(() => attention(q, k, k), { code: 'ERR_ATTNKIT_SHAPE', op: 'attention', argument: 'q', has: ['B >= 1 and H >= 1'] });
    const q0 = zeros([0, 4, 2, 8]);
    const k0 = zeros([0, 4, 2, 8]);
    expectError(() => attention(q0, k0, k0), { code: 'ERR_ATTNKIT_SHAPE', op: 'attention', argument: 'q' });
    disposeAll(q, k, q0, k0);
  });
});

describe('attention: dtypes, head dims, devices', () => {
  it('mismatched dtypes (q float32, k float16)', () => {
    const q = rnd([1, 4, 2, 8], 1);
    const k = rnd([1, 4, 2, 8], 2, 'float16');
    const v = rnd([1, 4, 2, 8], 3);
    expectError(() => attention(q, k, v), {
      code: 'ERR_ATTNKIT_DTYPE',
      op: 'attention',
      argument: 'k',
      message: "attention: expected 'k' to have the dtype of 'q' ('float32'), received 'float16'",
    });
    const vb = rnd([1, 4, 2, 8], 3, 'bfloat16');
    const kf = rnd([1, 4, 2, 8], 2);
    expectError(() => attention(q, kf, vb), { code: 'ERR_ATTNKIT_DTYPE', op: 'attention', argument: 'v', has: ["'float32'", "'bfloat16'"] });
    disposeAll(q, k, v, vb, kf);
  });

  it('unsupported dtype (int32 q, uint8 q)', () => {
    const q = zeros([1, 4, 2, 8], { dtype: 'int32' });
    expectError(() => attention(q, q, q), {
      code: 'ERR_ATTNKIT_DTYPE',
      op: 'attention',
      argument: 'q',
      message: "attention: expected 'q' to have dtype 'float32', 'float16' or 'bfloat16', received 'int32'",
    });
    const u = zeros([1, 4, 2, 8], { dtype: 'uint8' });
    expectError(() => attention(u, u, u), { code: 'ERR_ATTNKIT_DTYPE', op: 'attention', argument: 'q', has: ["'uint8'"] });
    disposeAll(q, u);
  });

  it('unsupported head dim (D = 600 > 512, and Dv = 600)', () => {
    const q = zeros([1, 1, 1, 600]);
    expectError(() => attention(q, q, q), {
      code: 'ERR_ATTNKIT_UNSUPPORTED',
      op: 'attention',
      argument: 'q',
      message: "attention: expected 'q' to have a head dim between 1 and 512, received 600",
    });
    const q8 = zeros([1, 1, 1, 8]);
    const v = zeros([1, 1, 1, 600]);
    expectError(() => attention(q8, q8, v), { code: 'ERR_ATTNKIT_UNSUPPORTED', op: 'attention', argument: 'v', has: ['between 1 and 512', '600'] });
    const q0 = zeros([1, 1, 1, 0]);
    expectError(() => attention(q0, q0, q8), { code: 'ERR_ATTNKIT_UNSUPPORTED', op: 'attention', argument: 'q', has: ['received 0'] });
    disposeAll(q, q8, v, q0);
  });

  it('a disposed tensor as an argument', () => {
    for (const which of ['q', 'k', 'v'] as const) {
      const t = qkv();
      t[which].dispose();
      expectError(() => attention(t.q, t.k, t.v), {
        code: 'ERR_ATTNKIT_DISPOSED',
        op: 'attention',
        argument: which,
        message: `attention: '${which}' was disposed and cannot be used`,
      });
      disposeAll(t.q, t.k, t.v);
    }
  });

  it('a non-Tensor argument', () => {
    const { q, k, v } = qkv();
    expectError(() => attention(null as never, k, v), {
      code: 'ERR_ATTNKIT_ARGUMENT',
      op: 'attention',
      argument: 'q',
      message: "attention: expected 'q' to be a Tensor, received null",
    });
    expectError(() => attention(q, [1, 2, 3] as never, v), {
      code: 'ERR_ATTNKIT_ARGUMENT',
      op: 'attention',
      argument: 'k',
      message: "attention: expected 'k' to be a Tensor, received an array",
    });
    expectError(() => attention(q, k, new Float32Array(64) as never), {
      code: 'ERR_ATTNKIT_ARGUMENT',
      op: 'attention',
      argument: 'v',
      has: ['to be a Tensor', 'object'],
    });
    expectError(() => attention(q, k, undefined as never), { code: 'ERR_ATTNKIT_ARGUMENT', op: 'attention', argument: 'v', has: ['undefined'] });
    // a look-alike object is not a Tensor
    const fake = { dtype: 'float32', shape: [1, 4, 2, 8], device: 'cpu', size: 64, disposed: false };
    expectError(() => attention(fake as never, k, v), { code: 'ERR_ATTNKIT_ARGUMENT', op: 'attention', argument: 'q' });
    disposeAll(q, k, v);
  });
});

describe('attention: options', () => {
  it("unknown option key ({casual: true}) names the key and lists the known ones", () => {
    const { q, k, v } = qkv();
    expectError(() => attention(q, k, v, { casual: true } as never), {
      code: 'ERR_ATTNKIT_ARGUMENT',
      op: 'attention',
      argument: 'casual',
      message: "attention: unknown option 'casual' (known options: causal, window, scale, stream)",
    });
    disposeAll(q, k, v);
  });

  it('options that are not an object', () => {
    const { q, k, v } = qkv();
    expectError(() => attention(q, k, v, 5 as never), { code: 'ERR_ATTNKIT_ARGUMENT', op: 'attention', argument: 'options', has: ['to be an object', 'received 5'] });
    expectError(() => attention(q, k, v, null as never), { code: 'ERR_ATTNKIT_ARGUMENT', op: 'attention', argument: 'options', has: ['null'] });
    expectError(() => attention(q, k, v, [] as never), { code: 'ERR_ATTNKIT_ARGUMENT', op: 'attention', argument: 'options' });
    disposeAll(q, k, v);
  });

  it('causal that is not a boolean', () => {
    const { q, k, v } = qkv();
    expectError(() => attention(q, k, v, { causal: 1 } as never), {
      code: 'ERR_ATTNKIT_ARGUMENT',
      op: 'attention',
      argument: 'causal',
      message: "attention: expected 'causal' to be a boolean, received 1",
    });
    disposeAll(q, k, v);
  });

  it('bad window: [1], [-2, 0], fractional, not an array', () => {
    const { q, k, v } = qkv();
    for (const [w, shown] of [
      [[1], '[1]'],
      [[-2, 0], '[-2,0]'],
      [[1.5, 0], '[1.5,0]'],
      [[0, NaN], '[0,NaN]'],
      [[1n, 2], '[1n,2]'],
      [[2 ** 31, 0], '[2147483648,0]'],
      [[1, 2, 3], '[1,2,3]'],
      ['3', '"3"'],
    ] as const) {
      expectError(() => attention(q, k, v, { window: w as never }), {
        code: 'ERR_ATTNKIT_ARGUMENT',
        op: 'attention',
        argument: 'window',
        message: `attention: expected 'window' to be [left, right] with integers >= -1 (-1 = unbounded) and < 2^31, received ${shown}`,
      });
    }
    disposeAll(q, k, v);
  });

  it('bad scale: 0, -1, NaN, Infinity, a string, beyond float32 (1e39, 1e-46), a bigint', () => {
    const { q, k, v } = qkv();
    for (const [s, shown] of [
      [0, '0'],
      [-1, '-1'],
      [NaN, 'NaN'],
      [Infinity, 'Infinity'],
      ['2', '"2"'],
      [2n, '2n'],
    ] as const) {
      expectError(() => attention(q, k, v, { scale: s as never }), {
        code: 'ERR_ATTNKIT_ARGUMENT',
        op: 'attention',
        argument: 'scale',
        message: `attention: expected 'scale' to be a finite number > 0, received ${shown}`,
      });
    }
    // finite in float64 but Infinity or 0 in float32, the kernels' precision (all-NaN output before)
    for (const [s, shown] of [[1e39, '1e+39'], [1e-46, '1e-46'], [-1e-46, '-1e-46']] as const)
      expectError(() => attention(q, k, v, { scale: s }), {
        code: 'ERR_ATTNKIT_ARGUMENT',
        op: 'attention',
        argument: 'scale',
        has: [s > 0 ? 'that float32 can hold' : 'to be a finite number > 0', `received ${shown}`],
      });
    attention(q, k, v, { scale: 3e38 }).out.dispose();
    disposeAll(q, k, v);
  });

  it('bad stream option', () => {
    const { q, k, v } = qkv();
    expectError(() => attention(q, k, v, { stream: {} as never }), {
      code: 'ERR_ATTNKIT_ARGUMENT',
      op: 'attention',
      argument: 'stream',
      message: "attention: expected 'stream' to be a Stream, received object",
    });
    expectError(() => attention(q, k, v, { stream: 'cpu' as never }), { code: 'ERR_ATTNKIT_ARGUMENT', op: 'attention', argument: 'stream', has: ['string'] });
    // a stream's raw native handle is not a Stream either
    expectError(() => attention(q, k, v, { stream: new Stream().native as never }), { code: 'ERR_ATTNKIT_ARGUMENT', op: 'attention', argument: 'stream' });
    disposeAll(q, k, v);
  });
});

describe('attentionBackward', () => {
  function forward() {
    const { q, k, v } = qkv(1, 6, 2, 8);
    const r = attention(q, k, v);
    return { q, k, v, ...r };
  }

  it('dOut shape mismatch', () => {
    const f = forward();
    const dOut = rnd([1, 6, 2, 4], 5);
    expectError(() => f.backward(dOut), {
      code: 'ERR_ATTNKIT_SHAPE',
      op: 'attentionBackward',
      argument: 'dOut',
      message: "attentionBackward: expected 'dOut' to have shape [1, 6, 2, 8], received [1, 6, 2, 4]",
    });
    expectError(() => attentionBackward(f.q, f.k, f.v, f.out, f.lse, dOut), { code: 'ERR_ATTNKIT_SHAPE', op: 'attentionBackward', argument: 'dOut' });
    disposeAll(f.q, f.k, f.v, f.out, f.lse, dOut);
  });

  it('dOut dtype mismatch', () => {
    const f = forward();
    const dOut = rnd([1, 6, 2, 8], 5, 'bfloat16');
    expectError(() => f.backward(dOut), {
      code: 'ERR_ATTNKIT_DTYPE',
      op: 'attentionBackward',
      argument: 'dOut',
      message: "attentionBackward: expected 'dOut' to have the dtype of 'q' ('float32'), received 'bfloat16'",
    });
    disposeAll(f.q, f.k, f.v, f.out, f.lse, dOut);
  });

  it('lse dtype mismatch and lse shape mismatch', () => {
    const f = forward();
    const dOut = rnd([1, 6, 2, 8], 5);
    const lse16 = rnd([1, 6, 2], 6, 'float16');
    expectError(() => attentionBackward(f.q, f.k, f.v, f.out, lse16, dOut), {
      code: 'ERR_ATTNKIT_DTYPE',
      op: 'attentionBackward',
      argument: 'lse',
      message: "attentionBackward: expected 'lse' to have dtype 'float32', received 'float16'",
    });
    const lseBad = rnd([1, 6, 2, 1], 6);
    expectError(() => attentionBackward(f.q, f.k, f.v, f.out, lseBad, dOut), {
      code: 'ERR_ATTNKIT_SHAPE',
      op: 'attentionBackward',
      argument: 'lse',
      message: "attentionBackward: expected 'lse' to have shape [1, 6, 2], received [1, 6, 2, 1]",
    });
    disposeAll(f.q, f.k, f.v, f.out, f.lse, dOut, lse16, lseBad);
  });

  it('out shape mismatch', () => {
    const f = forward();
    const dOut = rnd([1, 6, 2, 8], 5);
    const outBad = rnd([1, 5, 2, 8], 7);
    expectError(() => attentionBackward(f.q, f.k, f.v, outBad, f.lse, dOut), {
      code: 'ERR_ATTNKIT_SHAPE',
      op: 'attentionBackward',
      argument: 'out',
      has: ['[1, 6, 2, 8]', '[1, 5, 2, 8]'],
    });
    disposeAll(f.q, f.k, f.v, f.out, f.lse, dOut, outBad);
  });

  it('dLse shape and dtype mismatch', () => {
    const f = forward();
    const dOut = rnd([1, 6, 2, 8], 5);
    const dLse = rnd([1, 6, 3], 8);
    expectError(() => f.backward(dOut, dLse), {
      code: 'ERR_ATTNKIT_SHAPE',
      op: 'attentionBackward',
      argument: 'dLse',
      message: "attentionBackward: expected 'dLse' to have shape [1, 6, 2], received [1, 6, 3]",
    });
    const dLse16 = rnd([1, 6, 2], 8, 'bfloat16');
    expectError(() => attentionBackward(f.q, f.k, f.v, f.out, f.lse, dOut, { dLse: dLse16 }), {
      code: 'ERR_ATTNKIT_DTYPE',
      op: 'attentionBackward',
      argument: 'dLse',
      has: ["'float32'", "'bfloat16'"],
    });
    expectError(() => attentionBackward(f.q, f.k, f.v, f.out, f.lse, dOut, { dLse: 'x' as never }), {
      code: 'ERR_ATTNKIT_ARGUMENT',
      op: 'attentionBackward',
      argument: 'dLse',
    });
    disposeAll(f.q, f.k, f.v, f.out, f.lse, dOut, dLse, dLse16);
  });

  it('validates q, k, v and options like the forward (under its own op name)', () => {
    const f = forward();
    const dOut = rnd([1, 6, 2, 8], 5);
    expectError(() => attentionBackward(f.q, f.k, f.v, f.out, f.lse, dOut, { casual: true } as never), {
      code: 'ERR_ATTNKIT_ARGUMENT',
      op: 'attentionBackward',
      argument: 'casual',
      has: ["unknown option 'casual'", 'causal, window, scale, stream'],
    });
    const k16 = rnd([1, 6, 2, 16], 2);
    expectError(() => attentionBackward(f.q, k16, f.v, f.out, f.lse, dOut), { code: 'ERR_ATTNKIT_SHAPE', op: 'attentionBackward', argument: 'k' });
    f.out.dispose();
    expectError(() => attentionBackward(f.q, f.k, f.v, f.out, f.lse, dOut), {
      code: 'ERR_ATTNKIT_DISPOSED',
      op: 'attentionBackward',
      argument: 'out',
      message: "attentionBackward: 'out' was disposed and cannot be used",
    });
    disposeAll(f.q, f.k, f.v, f.lse, dOut, k16);
  });
});

describe('mergeAttention', () => {
  const part = (seed: number, shape = [1, 4, 2, 8]) => ({ out: rnd(shape, seed), lse: rnd(shape.slice(0, -1), seed + 100) });
  const disposeParts = (...ps: { out: Tensor; lse: Tensor }[]) => ps.forEach((p) => disposeAll(p.out, p.lse));

  it('an empty list, or not a list', () => {
    expectError(() => mergeAttention([]), {
      code: 'ERR_ATTNKIT_ARGUMENT',
      op: 'mergeAttention',
      argument: 'parts',
      message: "mergeAttention: expected 'parts' to be a non-empty array of {out, lse}, received an empty array",
    });
    expectError(() => mergeAttention(undefined as never), { code: 'ERR_ATTNKIT_ARGUMENT', op: 'mergeAttention', argument: 'parts', has: ['undefined'] });
    expectError(() => mergeAttention([null] as never), { code: 'ERR_ATTNKIT_ARGUMENT', op: 'mergeAttention', argument: 'parts[0]', has: ['{out, lse}'] });
    const p = part(1);
    expectError(() => mergeAttention([p, { out: p.out }] as never), {
      code: 'ERR_ATTNKIT_ARGUMENT',
      op: 'mergeAttention',
      argument: 'parts[1].lse',
      has: ['to be a Tensor', 'undefined'],
    });
    disposeParts(p);
  });

  it('mismatched part shapes', () => {
    const a = part(1);
    const b = part(2, [1, 5, 2, 8]);
    expectError(() => mergeAttention([a, b]), {
      code: 'ERR_ATTNKIT_SHAPE',
      op: 'mergeAttention',
      argument: 'parts[1].out',
      message: "mergeAttention: expected 'parts[1].out' to have shape [1, 4, 2, 8], received [1, 5, 2, 8]",
    });
    disposeParts(a, b);
  });

  it('lse of the wrong shape', () => {
    const a = part(1);
    const badLse = rnd([1, 4, 3], 7);
    expectError(() => mergeAttention([a, { out: a.out, lse: badLse }]), {
      code: 'ERR_ATTNKIT_SHAPE',
      op: 'mergeAttention',
      argument: 'parts[1].lse',
      message: "mergeAttention: expected 'parts[1].lse' to have shape [1, 4, 2], received [1, 4, 3]",
    });
    const fullLse = rnd([1, 4, 2, 8], 8);
    expectError(() => mergeAttention([{ out: a.out, lse: fullLse }]), { code: 'ERR_ATTNKIT_SHAPE', op: 'mergeAttention', argument: 'parts[0].lse' });
    disposeParts(a);
    disposeAll(badLse, fullLse);
  });

  it('lse of the wrong dtype', () => {
    const a = part(1);
    const lse16 = rnd([1, 4, 2], 7, 'float16');
    expectError(() => mergeAttention([a, { out: a.out, lse: lse16 }]), {
      code: 'ERR_ATTNKIT_DTYPE',
      op: 'mergeAttention',
      argument: 'parts[1].lse',
      message: "mergeAttention: expected 'parts[1].lse' to have dtype 'float32', received 'float16'",
    });
    disposeParts(a);
    lse16.dispose();
  });

  it('parts of different dtypes, or an integer dtype', () => {
    const a = part(1);
    const b = { out: rnd([1, 4, 2, 8], 2, 'bfloat16'), lse: rnd([1, 4, 2], 3) };
    expectError(() => mergeAttention([a, b]), {
      code: 'ERR_ATTNKIT_DTYPE',
      op: 'mergeAttention',
      argument: 'parts[1].out',
      has: ["'float32'", "'bfloat16'"],
    });
    const i = { out: zeros([1, 4, 2, 8], { dtype: 'int32' }), lse: zeros([1, 4, 2]) };
    expectError(() => mergeAttention([i]), { code: 'ERR_ATTNKIT_DTYPE', op: 'mergeAttention', argument: 'parts[0].out', has: ["'int32'"] });
    disposeParts(a, b, i);
  });

  it('a disposed part, an unknown option, a bad stream', () => {
    const a = part(1);
    const b = part(2);
    b.lse.dispose();
    expectError(() => mergeAttention([a, b]), {
      code: 'ERR_ATTNKIT_DISPOSED',
      op: 'mergeAttention',
      argument: 'parts[1].lse',
      message: "mergeAttention: 'parts[1].lse' was disposed and cannot be used",
    });
    expectError(() => mergeAttention([a], { strem: 1 } as never), {
      code: 'ERR_ATTNKIT_ARGUMENT',
      op: 'mergeAttention',
      argument: 'strem',
      message: "mergeAttention: unknown option 'strem' (known options: stream)",
    });
    expectError(() => mergeAttention([a], { stream: 1 as never }), { code: 'ERR_ATTNKIT_ARGUMENT', op: 'mergeAttention', argument: 'stream' });
    disposeParts(a, b);
  });

  it('backward: dOut shape mismatch, dLse dtype mismatch', () => {
    const a = part(1);
    const b = part(2);
    const m = mergeAttention([a, b]);
    const dOut = rnd([1, 4, 2, 7], 3);
    expectError(() => m.backward(dOut), {
      code: 'ERR_ATTNKIT_SHAPE',
      op: 'mergeAttentionBackward',
      argument: 'dOut',
      message: "mergeAttentionBackward: expected 'dOut' to have shape [1, 4, 2, 8], received [1, 4, 2, 7]",
    });
    const dOk = rnd([1, 4, 2, 8], 3);
    const dLse = rnd([1, 4, 2], 4, 'bfloat16');
    expectError(() => mergeAttentionBackward([a, b], m.out, m.lse, dOk, { dLse }), {
      code: 'ERR_ATTNKIT_DTYPE',
      op: 'mergeAttentionBackward',
      argument: 'dLse',
    });
    disposeParts(a, b, m);
    disposeAll(dOut, dOk, dLse);
  });
});

describe('tensor factories', () => {
  it('NaN, negative, fractional and infinite sizes', () => {
    expectError(() => empty([2, NaN]), {
      code: 'ERR_ATTNKIT_SHAPE',
      op: 'empty',
      argument: 'shape',
      message: "empty: expected 'shape' to hold non-negative integers, received NaN at position 1",
    });
    expectError(() => zeros([-1]), {
      code: 'ERR_ATTNKIT_SHAPE',
      op: 'zeros',
      argument: 'shape',
      message: "zeros: expected 'shape' to hold non-negative integers, received -1 at position 0",
    });
    expectError(() => zeros([2, 1.5]), { code: 'ERR_ATTNKIT_SHAPE', op: 'zeros', argument: 'shape', has: ['1.5 at position 1'] });
    expectError(() => randn([Infinity], { seed: 1 }), { code: 'ERR_ATTNKIT_SHAPE', op: 'randn', argument: 'shape', has: ['Infinity at position 0'] });
    expectError(() => empty(['2'] as never), { code: 'ERR_ATTNKIT_SHAPE', op: 'empty', argument: 'shape', has: ['"2" at position 0'] });
    expectError(() => empty(5 as never), {
      code: 'ERR_ATTNKIT_SHAPE',
      op: 'empty',
      argument: 'shape',
      message: "empty: expected 'shape' to be an array of non-negative integers, received 5",
    });
    expectError(() => tensor([1, 2], [2, -1]), { code: 'ERR_ATTNKIT_SHAPE', op: 'tensor', argument: 'shape' });
  });

  it('more elements than can be counted exactly', () => {
    expectError(() => empty([2 ** 30, 2 ** 30, 2 ** 30]), { code: 'ERR_ATTNKIT_SHAPE', op: 'empty', argument: 'shape', has: ['fewer elements'] });
  });

  it('a shape that does not match the data length', () => {
    expectError(() => tensor([1, 2], [3]), {
      code: 'ERR_ATTNKIT_SHAPE',
      op: 'tensor',
      argument: 'shape',
      message: "tensor: expected 'shape' to hold 2 elements (the data's length), received [3] (3 elements)",
    });
    expectError(() => tensor(new Float32Array(6), [2, 2]), { code: 'ERR_ATTNKIT_SHAPE', op: 'tensor', argument: 'shape', has: ['6 elements', '[2, 2] (4 elements)'] });
  });

  it('data that is not an array', () => {
    expectError(() => tensor('abc' as never), {
      code: 'ERR_ATTNKIT_ARGUMENT',
      op: 'tensor',
      argument: 'data',
      message: "tensor: expected 'data' to be a typed array or an array of numbers, received \"abc\"",
    });
    expectError(() => tensor(7 as never), { code: 'ERR_ATTNKIT_ARGUMENT', op: 'tensor', argument: 'data', has: ['received 7'] });
  });

  it('an unknown dtype name', () => {
    expectError(() => empty([2], { dtype: 'float64' as never }), {
      code: 'ERR_ATTNKIT_DTYPE',
      op: 'empty',
      argument: 'dtype',
      message: `empty: expected 'dtype' to be one of float32, float16, bfloat16, int32, uint8, received "float64"`,
    });
    expectError(() => zeros([2], { dtype: 'half' as never }), { code: 'ERR_ATTNKIT_DTYPE', op: 'zeros', argument: 'dtype', has: ['"half"'] });
    expectError(() => tensor([1], [1], { dtype: 'toString' as never }), { code: 'ERR_ATTNKIT_DTYPE', op: 'tensor', argument: 'dtype' });
    expectError(() => randn([2], { dtype: 'int8' as never }), { code: 'ERR_ATTNKIT_DTYPE', op: 'randn', argument: 'dtype' });
  });

  it("a bad device: 'gpu'", () => {
    expectError(() => empty([2], { device: 'gpu' as never }), {
      code: 'ERR_ATTNKIT_DEVICE',
      op: 'empty',
      argument: 'device',
      message: `empty: expected 'device' to be 'cpu' or 'cuda:N', received "gpu"`,
    });
    expectError(() => tensor([1], [1], { device: 'CPU' as never }), { code: 'ERR_ATTNKIT_DEVICE', op: 'tensor', argument: 'device', has: ['"CPU"'] });
    expectError(() => zeros([1], { device: 0 as never }), { code: 'ERR_ATTNKIT_DEVICE', op: 'zeros', argument: 'device' });
  });

  it.skipIf(cuda.available())("'cuda:0' without CUDA: ERR_ATTNKIT_DEVICE with the reason", () => {
    const reason = cuda.reason();
    expect(reason.length).toBeGreaterThan(0);
    const makers: [string, () => unknown][] = [
      ['empty', () => empty([2], { device: 'cuda:0' })],
      ['zeros', () => zeros([2], { device: 'cuda:0' })],
      ['randn', () => randn([2], { device: 'cuda:0' })],
      ['tensor', () => tensor([1, 2], [2], { device: 'cuda:0' })],
    ];
    for (const [op, make] of makers) {
      const e = expectError(make, { code: 'ERR_ATTNKIT_DEVICE', argument: 'device', op });
      expect(e.message).toContain("'cuda:0'");
      expect(e.message).toContain(reason);
    }
    const t = tensor([1, 2]);
    const e = expectError(() => t.to('cuda:0'), { code: 'ERR_ATTNKIT_DEVICE', op: 'to', argument: 'target' });
    expect(e.message).toContain(reason);
    t.dispose();
  });
});

describe('a native allocation failure', () => {
  it.skipIf(process.platform !== 'linux')('an impossible allocation throws ERR_ATTNKIT_OOM (and counts nothing)', async () => {
    // 2^42 float32 elements = 16 TiB: more than the address space a heuristic-overcommit kernel grants
    await synchronize();
    const before = memory().cpu;
    const e = expectError(() => empty([2 ** 42]), { code: 'ERR_ATTNKIT_OOM', op: 'empty' });
    expect(e.message).toContain('out of memory');
    // Not counted: the live bytes did not grow. (They may shrink meanwhile: storage that earlier
    // tests disposed while work on it was queued is freed by stream workers, off this thread.)
    expect(memory().cpu).toBeLessThanOrEqual(before);
  });
});

describe('a failed op leaves its inputs intact', () => {
  it('inputs are not disposed and read back the same values; nothing is allocated', async () => {
    const q = randn([1, 6, 2, 8], { seed: 1 });
    const k = randn([1, 6, 2, 8], { seed: 2 });
    const v = randn([1, 6, 2, 8], { seed: 3 });
    const k16 = randn([1, 6, 2, 8], { seed: 4, dtype: 'float16' });
    const before = await Promise.all([q, k, v, k16].map((t) => t.toArray({ raw: true })));
    await synchronize();
    const mem = memory().cpu;
    const attempts: (() => unknown)[] = [
      () => attention(q, k, v, { casual: true } as never),
      () => attention(q, k16, v),
      () => attention(q, k, v, { window: [-2, 0] }),
      () => attention(q, k, v, { scale: NaN }),
      () => attention(q, k, v, { stream: {} as never }),
      () => attentionBackward(q, k, v, q, k, v),
      () => mergeAttention([{ out: q, lse: k }]),
    ];
    for (const f of attempts) expect(f).toThrow(AttnkitError);
    expect(memory().cpu).toBe(mem);
    for (const t of [q, k, v, k16]) {
      expect(t.disposed).toBe(false);
      expect(t.bytes).toBeGreaterThan(0);
    }
    const after = await Promise.all([q, k, v, k16].map((t) => t.toArray({ raw: true })));
    after.forEach((a, i) => expect(Array.from(a)).toEqual(Array.from(before[i]!)));
    // and they still work as inputs
    const r = attention(q, k, v);
    expect((await r.out.toArray()).length).toBe(96);
    disposeAll(q, k, v, k16, r.out, r.lse);
  });

  it('a backward call that throws leaves the forward results usable', async () => {
    const { q, k, v } = qkv(1, 6, 2, 8);
    const r = attention(q, k, v);
    const outBefore = await r.out.toArray();
    const bad = rnd([1, 6, 2, 4], 9);
    expect(() => r.backward(bad)).toThrow(AttnkitError);
    expect(r.out.disposed).toBe(false);
    expect(Array.from(await r.out.toArray())).toEqual(Array.from(outBefore));
    const dOut = rnd([1, 6, 2, 8], 10);
    const g = r.backward(dOut);
    expect(g.dq.shape).toEqual([1, 6, 2, 8]);
    expect((await g.dq.toArray()).every(Number.isFinite)).toBe(true);
    disposeAll(q, k, v, r.out, r.lse, bad, dOut, g.dq, g.dk, g.dv);
  });
});

describe('docs/errors.md lists every error code, with examples that are true', () => {
  const docs = documentedErrors();
  const src = (dir: string, ext: RegExp): string[] =>
    readdirSync(join(root, dir), { withFileTypes: true }).flatMap((e) =>
      e.isDirectory() ? src(`${dir}/${e.name}`, ext) : ext.test(e.name) ? [readFileSync(join(root, dir, e.name), 'utf8')] : [],
    );

  it('the documented codes are exactly those of AttnkitErrorCode', () => {
    const union = [...readFileSync(join(root, 'src', 'errors.ts'), 'utf8').matchAll(/\| '(ERR_ATTNKIT_[A-Z_]+)'/g)].map((m) => m[1]);
    expect(union.length).toBeGreaterThan(5);
    expect(docs.map((d) => d.code).sort()).toEqual([...union].sort());
  });

  it('every code raised in src/ (ERR_ATTNKIT_*) and native/ (Error("X", ...)) is documented', () => {
    const documented = new Set(docs.map((d) => d.code));
    const raised = new Set<string>();
    for (const text of src('src', /\.ts$/)) for (const m of text.matchAll(/ERR_ATTNKIT_[A-Z_]+/g)) raised.add(m[0]);
    for (const text of src('native', /\.(cc|h|cu|cuh)$/))
      for (const m of text.matchAll(/\b(?:Error|Failure\{|fail)\(?\s*"([A-Z]+)"\s*,/g)) raised.add(`ERR_ATTNKIT_${m[1]}`);
    expect(raised.size).toBeGreaterThan(5);
    expect([...raised].filter((c) => !documented.has(c))).toEqual([]);
  });

  it.each(docs.filter((d) => d.call !== undefined).map((d) => [d.code, d] as const))('%s: the example throws the documented message', (code, d) => {
    // the doc's example, an expression over the public API
    const run = new Function('ak', `with (ak) { return ${d.call}; }`) as (api: typeof ak) => unknown;
    const e = expectError(() => run(ak), { code, op: d.message.split(':')[0]! });
    expect(e.message).toBe(d.message);
  });

  it('every section has a message, and all but the GPU/broken-install ones a runnable example', () => {
    for (const d of docs) expect(d.message, d.code).not.toBe('');
    expect(docs.filter((d) => d.call === undefined).map((d) => d.code).sort()).toEqual(['ERR_ATTNKIT_CUDA', 'ERR_ATTNKIT_INTERNAL', 'ERR_ATTNKIT_LOAD']);
  });
});
