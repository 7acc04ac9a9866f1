/**
 * Regression tests for the argument defects of issue 18 (bullets 2-6): each call that gave a silent
 * wrong result, a hang, a crash or a raw TypeError/RangeError now throws an AttnkitError with a
 * documented code, the op and the argument named, at once. The CLI's mask command prints the error,
 * exits non-zero and writes no file.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import {
  AttnkitError,
  BlockMask,
  Stream,
  attention,
  attentionBackward,
  blockSparseAttention,
  blockSparseAttentionBackward,
  chooseTileShape,
  cpu,
  empty,
  linearAttention,
  linearAttentionBackward,
  mergeAttention,
  mergeAttentionBackward,
  mobaMask,
  na1d,
  na1dBackward,
  neighborhoodPlan,
  randn,
  tensor,
  zeros,
  type Tensor,
} from '../src/index.ts';
import { show } from '../src/errors.ts';
import { distCli, ensureDist, root } from './fuzz/dist.ts';
import { expectError, type Expect as Want } from './fuzz/expect-error.ts';

/** The same, and within `ms` milliseconds (sizes >= 2^31 must not loop or allocate first). */
function expectFastError(fn: () => unknown, want: Want, ms = 200): AttnkitError {
  const t0 = performance.now();
  const e = expectError(fn, want);
  expect(performance.now() - t0).toBeLessThan(ms);
  return e;
}

const qkv = (N = 4, H = 1, D = 8) => {
  const q = randn([1, N, H, D], { seed: 1 });
  return { q, k: randn([1, N, H, D], { seed: 2 }), v: randn([1, N, H, D], { seed: 3 }) };
};
const disposeAll = (...ts: Tensor[]) => ts.forEach((t) => t.dispose());

describe('BlockMask.neighborhood', () => {
  const NB = 'BlockMask.neighborhood';
  it('a number kernelSize means every axis, as na2d takes it (not an empty mask)', async () => {
    const byNumber = BlockMask.neighborhood({ size: [24, 24], kernelSize: 7 }, { blockQ: 16, blockK: 16 });
    const byAxis = BlockMask.neighborhood({ size: [24, 24], kernelSize: [7, 7] }, { blockQ: 16, blockK: 16 });
    expect(await byNumber.toDense()).toEqual(await byAxis.toDense());
    expect(await byNumber.density()).toBeCloseTo(49 / 576, 12);
  });

  it('a boolean causal means every axis (not silently non-causal)', async () => {
    const all = BlockMask.neighborhood({ size: [6, 5], kernelSize: 3, causal: true }, { blockQ: 16, blockK: 16 });
    const perAxis = BlockMask.neighborhood({ size: [6, 5], kernelSize: [3, 3], causal: [true, true] }, { blockQ: 16, blockK: 16 });
    const none = BlockMask.neighborhood({ size: [6, 5], kernelSize: 3 }, { blockQ: 16, blockK: 16 });
    expect(await all.toDense()).toEqual(await perAxis.toDense());
    expect(await all.toDense()).not.toEqual(await none.toDense());
    // causal: no query sees a later token
    const d = await all.toDense();
    for (let q = 0; q < 30; q++) for (let k = q + 1; k < 30; k++) expect(d[q * 30 + k]).toBe(0);
  });

  it('a kernelSize list of the wrong length for the grid', () => {
    expectError(() => BlockMask.neighborhood({ size: [24, 24], kernelSize: [7] }), { code: 'ERR_ATTNKIT_ARGUMENT', op: NB, argument: 'kernelSize', has: ['or 2 of them', 'received [7]'] });
    expectError(() => BlockMask.neighborhood({ size: [24], kernelSize: [3, 3] }), { code: 'ERR_ATTNKIT_ARGUMENT', op: NB, argument: 'kernelSize' });
    expectError(() => BlockMask.neighborhood({ size: [24, 24], kernelSize: 3, causal: [true] }), { code: 'ERR_ATTNKIT_ARGUMENT', op: NB, argument: 'causal' });
  });

  it('kernel 0, 2.5, larger than the grid, stride > kernel, a string causal', () => {
    expectError(() => BlockMask.neighborhood({ size: [24], kernelSize: [0] }), { code: 'ERR_ATTNKIT_ARGUMENT', op: NB, argument: 'kernelSize', has: ['positive integer', 'received 0'] });
    expectError(() => BlockMask.neighborhood({ size: [24], kernelSize: 2.5 }), { code: 'ERR_ATTNKIT_ARGUMENT', op: NB, argument: 'kernelSize', has: ['received 2.5'] });
    expectError(() => BlockMask.neighborhood({ size: [24, 8], kernelSize: [3, 9] }), { code: 'ERR_ATTNKIT_SHAPE', op: NB, argument: 'kernelSize', has: ['input size 8 on axis 1'] });
    expectError(() => BlockMask.neighborhood({ size: [24], kernelSize: 3, dilation: 9 }), { code: 'ERR_ATTNKIT_SHAPE', op: NB, argument: 'kernelSize', has: ['3 x 9 = 27'] });
    expectError(() => BlockMask.neighborhood({ size: [24], kernelSize: [3], stride: [4] }), { code: 'ERR_ATTNKIT_ARGUMENT', op: NB, argument: 'stride', has: ['kernel size 3'] });
    expectError(() => BlockMask.neighborhood({ size: [24], kernelSize: 3, causal: 'true' as never }), { code: 'ERR_ATTNKIT_ARGUMENT', op: NB, argument: 'causal' });
  });

  it("{input: ...} and unknown keys are named, not a raw TypeError or ignored", () => {
    expectError(() => BlockMask.neighborhood({ input: [24] } as never), { code: 'ERR_ATTNKIT_ARGUMENT', op: NB, argument: 'input', has: ['known keys: size, kernelSize'] });
    expectError(() => BlockMask.neighborhood({ size: [24], kernelSize: 3, dilaton: 2 } as never), { code: 'ERR_ATTNKIT_ARGUMENT', op: NB, argument: 'dilaton' });
    expectError(() => BlockMask.neighborhood({ size: [24], kernelSize: 3 }, { blockq: 16 } as never), { code: 'ERR_ATTNKIT_ARGUMENT', op: NB, argument: 'blockq' });
    expectError(() => BlockMask.neighborhood(undefined as never), { code: 'ERR_ATTNKIT_ARGUMENT', op: NB, argument: 'params' });
    expectError(() => BlockMask.neighborhood({ size: [24] } as never), { code: 'ERR_ATTNKIT_ARGUMENT', op: NB, argument: 'kernelSize', has: ['missing'] });
  });

  it('kernelSize [1e308, 3] and sizes >= 2^31 are refused at once (no out-of-memory abort)', () => {
    expectFastError(() => BlockMask.neighborhood({ size: [24, 24], kernelSize: [1e308, 3] }), { code: 'ERR_ATTNKIT_SHAPE', op: NB, argument: 'kernelSize', has: ['< 2^31'] });
    expectFastError(() => BlockMask.neighborhood({ size: [2 ** 31], kernelSize: 3 }), { code: 'ERR_ATTNKIT_SHAPE', op: NB, argument: 'size' });
    expectFastError(() => BlockMask.neighborhood({ size: [2 ** 16, 2 ** 16], kernelSize: 3 }), { code: 'ERR_ATTNKIT_SHAPE', op: NB, argument: 'size', has: ['fewer than 2^31 tokens'] });
  });
});

describe('attnkit mask --kind neighborhood', () => {
  beforeAll(() => ensureDist());
  const run = (args: string[]) => spawnSync(process.execPath, [distCli, 'mask', ...args], { cwd: root, encoding: 'utf8', timeout: 60_000 });

  it('--kernel 7 on a 24x24 grid means 7x7 (the mask na2d computes, not an empty one)', () => {
    const dir = mkdtempSync(join(tmpdir(), 'attnkit-mask-'));
    try {
      const r = run(['--svg', join(dir, 'm.svg'), '--kind', 'neighborhood', '--input', '24,24', '--kernel', '7']);
      expect(r.stderr).toBe('');
      expect(r.status).toBe(0);
      expect(r.stdout).toContain(`density ${(49 / 576).toFixed(3)}`);
      expect(existsSync(join(dir, 'm.svg'))).toBe(true);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('a kernel that does not fit: the error printed, exit 1, no file written', () => {
    const dir = mkdtempSync(join(tmpdir(), 'attnkit-mask-'));
    try {
      for (const [kernel, code] of [['7,7,7', 'ERR_ATTNKIT_ARGUMENT'], ['30', 'ERR_ATTNKIT_SHAPE'], ['7,25', 'ERR_ATTNKIT_SHAPE']] as const) {
        const file = join(dir, `k${kernel}.svg`);
        const r = run(['--svg', file, '--kind', 'neighborhood', '--input', '24,24', '--kernel', kernel]);
        expect(r.status).toBe(1);
        expect(r.stderr).toContain(`attnkit: ${code}: BlockMask.neighborhood: expected 'kernelSize'`);
        expect(existsSync(file)).toBe(false);
      }
      const w = run(['--svg', join(dir, 'w.svg'), '--kind', 'window', '--window', 'a,b']);
      expect(w.status).toBe(1);
      expect(w.stderr).toContain('--window');
      expect(existsSync(join(dir, 'w.svg'))).toBe(false);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('sizes >= 2^31: ERR_ATTNKIT_SHAPE at once', () => {
  const base = { rank: 1, size: [2 ** 31], kernel: [3], stride: [1], dilation: [1], causal: [false] };
  it.each([
    ['BlockMask.causal', 'Nq', () => BlockMask.causal(2 ** 40, 16)],
    ['BlockMask.causal', 'Nk', () => BlockMask.causal(16, 2 ** 31)],
    ['BlockMask.fromPredicate', 'Nq', () => BlockMask.fromPredicate(() => true, { Nq: 2 ** 31, Nk: 16 })],
    ['BlockMask.fromPredicate', 'B', () => BlockMask.fromPredicate(() => true, { B: 2 ** 31, Nq: 16, Nk: 16 })],
    ['BlockMask.slidingWindow', 'Nq', () => BlockMask.slidingWindow(2 ** 31, 16, 1, 1)],
    ['BlockMask.slidingWindow', 'left', () => BlockMask.slidingWindow(16, 16, 2 ** 31, 1)],
    ['BlockMask.documents', 'seqLens[0]', () => BlockMask.documents([2 ** 31])],
    ['BlockMask.documents', 'seqLens', () => BlockMask.documents([2 ** 30, 2 ** 30])],
    ['chooseTileShape', 'size', () => chooseTileShape(base)],
    ['neighborhoodPlan', 'size', () => neighborhoodPlan({ ...base, tile: [64] })],
    ['BlockMask.fromData', 'Nq', () => BlockMask.fromData({ B: 1, H: 1, Nq: 2 ** 31, Nk: 16, blockQ: 16, blockK: 16 }, {} as never)],
  ] as const)('%s(%s)', (op, argument, fn) => {
    expectFastError(fn, { code: 'ERR_ATTNKIT_SHAPE', op, argument });
  });
});

describe('no raw TypeError or RangeError', () => {
  it('a BigInt anywhere in the options, and messages that show it', () => {
    expectError(() => new Stream(3n as never), { code: 'ERR_ATTNKIT_DEVICE', op: 'Stream', argument: 'device', has: ['received 3n'] });
    const { q, k, v } = qkv();
    expectError(() => attention(q, k, v, { window: [1n, 2] as never }), { code: 'ERR_ATTNKIT_ARGUMENT', op: 'attention', argument: 'window', has: ['received [1n,2]'] });
    expectError(() => attention(q, k, v, { causal: 1n as never }), { code: 'ERR_ATTNKIT_ARGUMENT', op: 'attention', argument: 'causal', has: ['received 1n'] });
    expectError(() => zeros([2n] as never), { code: 'ERR_ATTNKIT_SHAPE', op: 'zeros', argument: 'shape', has: ['2n at position 0'] });
    expectError(() => randn([2], { seed: 5n as never }), { code: 'ERR_ATTNKIT_ARGUMENT', op: 'randn', argument: 'seed', has: ['received 5n'] });
    expectError(() => BlockMask.slidingWindow(16, 16, 1n as never, 0), { code: 'ERR_ATTNKIT_ARGUMENT', op: 'BlockMask.slidingWindow', argument: 'left' });
    expectError(() => BlockMask.neighborhood({ size: [8], kernelSize: [3n] as never }), { code: 'ERR_ATTNKIT_ARGUMENT', op: 'BlockMask.neighborhood', argument: 'kernelSize', has: ['received 3n'] });
    disposeAll(q, k, v);
  });

  it('show() serialises anything without throwing', () => {
    const cyclic: Record<string, unknown> = { a: 1 };
    cyclic.self = cyclic;
    const trap = Object.defineProperty({}, 'x', { enumerable: true, get: () => { throw new Error('getter'); } });
    expect(show(cyclic)).toBe('{"a":1,"self":{"a":1,"self":{...}}}');
    expect(show(trap)).toBe('an object');
    expect(show({ w: [1n, NaN, -0, Infinity] })).toBe('{"w":[1n,NaN,-0,Infinity]}');
    expect(show(Symbol('s'))).toBe('Symbol(s)');
    expect(show(new Float32Array(3))).toBe('a Float32Array of 3 elements');
    expect(show(Object.create(null))).toBe('{}');
  });

  it('cpu.setIsa(0), neighborhoodPlan({}), empty([2], null), randn([2], {stream: {}})', () => {
    expectError(() => cpu.setIsa(0 as never), { code: 'ERR_ATTNKIT_ARGUMENT', op: 'cpu.setIsa', argument: 'level', has: ["'generic'", 'received 0'] });
    expectError(() => neighborhoodPlan({} as never), { code: 'ERR_ATTNKIT_ARGUMENT', op: 'neighborhoodPlan', argument: 'rank' });
    expectError(() => neighborhoodPlan({ rank: 1, size: [8], kernel: [3], stride: [1], dilation: [1], causal: [false] } as never), {
      code: 'ERR_ATTNKIT_ARGUMENT',
      op: 'neighborhoodPlan',
      argument: 'tile',
    });
    expectError(() => neighborhoodPlan({ rank: 1, size: [8], kernel: [3], stride: [1], dilation: [1], causal: [false], tile: [32] }), {
      code: 'ERR_ATTNKIT_ARGUMENT',
      op: 'neighborhoodPlan',
      argument: 'tile',
      has: ['64 tokens'],
    });
    expectError(() => chooseTileShape({ rank: 2, size: [8], kernel: [3], stride: [1], dilation: [1], causal: [false] }), { code: 'ERR_ATTNKIT_ARGUMENT', op: 'chooseTileShape', argument: 'size' });
    expectError(() => empty([2], null as never), { code: 'ERR_ATTNKIT_ARGUMENT', op: 'empty', argument: 'options', has: ['received null'] });
    expectError(() => randn([2], { stream: {} as never }), { code: 'ERR_ATTNKIT_ARGUMENT', op: 'randn', argument: 'stream', has: ['to be a Stream'] });
  });

  it('fromBlocks(tensor, ...), fromBlocks([], NaN, ...), mask.and(null), documents([2**31])', () => {
    const t = zeros([4]);
    expectError(() => BlockMask.fromBlocks(t as never, [1, 1, 2, 2], { Nq: 128, Nk: 128 }), { code: 'ERR_ATTNKIT_ARGUMENT', op: 'BlockMask.fromBlocks', argument: 'blocks', has: ['received a Tensor'] });
    expectError(() => BlockMask.fromBlocks([], NaN as never, { Nq: 128, Nk: 128 }), { code: 'ERR_ATTNKIT_SHAPE', op: 'BlockMask.fromBlocks', argument: 'shape', has: ['received NaN'] });
    expectError(() => BlockMask.fromBlocks([1], [1, 1, 1, 1], undefined as never), { code: 'ERR_ATTNKIT_ARGUMENT', op: 'BlockMask.fromBlocks', argument: 'options' });
    const m = BlockMask.causal(64, 64);
    expectError(() => m.and(null as never), { code: 'ERR_ATTNKIT_ARGUMENT', op: 'BlockMask.and', argument: 'other', has: ['received null'] });
    expectError(() => m.or({} as never), { code: 'ERR_ATTNKIT_ARGUMENT', op: 'BlockMask.or', argument: 'other' });
    expectError(() => BlockMask.documents([2 ** 31]), { code: 'ERR_ATTNKIT_SHAPE', op: 'BlockMask.documents', argument: 'seqLens[0]' });
    t.dispose();
  });
});

describe('unknown option names are refused, with the known names listed', () => {
  const { q, k, v } = qkv();
  const fwd = attention(q, k, v);
  it.each([
    ['zeros', 'dtpye', () => zeros([2], { dtpye: 'float16' } as never)],
    ['empty', 'devcie', () => empty([2], { devcie: 'cpu' } as never)],
    ['randn', 'sead', () => randn([2], { sead: 1 } as never)],
    ['tensor', 'dtyp', () => tensor([1], [1], { dtyp: 'int32' } as never)],
    ['to', 'strem', () => q.to('cpu', { strem: null } as never)],
    ['BlockMask.documents', 'casual', () => BlockMask.documents([4], { casual: true } as never)],
    ['BlockMask.causal', 'causal', () => BlockMask.causal(4, 4, { causal: true } as never)],
    ['BlockMask.slidingWindow', 'block', () => BlockMask.slidingWindow(4, 4, 1, 0, { block: 16 } as never)],
    ['BlockMask.fromPredicate', 'n', () => BlockMask.fromPredicate(() => true, { Nq: 4, Nk: 4, n: 1 } as never)],
    ['BlockMask.fromBlocks', 'causal', () => BlockMask.fromBlocks([1], [1, 1, 1, 1], { Nq: 4, Nk: 4, causal: true } as never)],
    ['BlockMask.fromData', 'extra', () => BlockMask.fromData({ B: 1, H: 1, Nq: 0, Nk: 0, blockQ: 16, blockK: 16 }, { ...emptyLists(), extra: 1 } as never)],
    ['attentionBackward', 'dlse', () => attentionBackward(q, k, v, fwd.out, fwd.lse, fwd.out, { dlse: undefined } as never)],
    ['linearAttentionBackward', 'dState', () => linearAttentionBackward(q, k, v, q, { dState: 1 } as never)],
    ['na1dBackward', 'kernel', () => na1dBackward(q, k, v, fwd.out, fwd.lse, fwd.out, { kernelSize: 3, kernel: 3 } as never)],
  ] as const)('%s({%s})', (op, argument, fn) => {
    const e = expectError(fn, { code: 'ERR_ATTNKIT_ARGUMENT', op, argument });
    expect(e.message).toMatch(/known (options|keys): /);
  });
});

function emptyLists() {
  return { fullOffsets: new Int32Array(1), fullIndices: new Int32Array(0), partialOffsets: new Int32Array(1), partialIndices: new Int32Array(0), partialBits: new Uint32Array(0) };
}

describe('strict types: causal, functional backward options, tensor data, randn seed', () => {
  it("causal is read as a boolean strictly ({causal: 'false'} is refused, not causal)", () => {
    expectError(() => BlockMask.documents([4], { causal: 'false' } as never), { code: 'ERR_ATTNKIT_ARGUMENT', op: 'BlockMask.documents', argument: 'causal', has: ['received "false"'] });
    expectError(() => BlockMask.slidingWindow(4, 4, 1, 1, { causal: 1 } as never), { code: 'ERR_ATTNKIT_ARGUMENT', op: 'BlockMask.slidingWindow', argument: 'causal' });
  });

  it('functional backwards refuse options that are not an object', () => {
    const { q, k, v } = qkv(16);
    const a = attention(q, k, v);
    const mask = BlockMask.causal(16, 16, { blockQ: 16, blockK: 16 });
    const bs = blockSparseAttention(q, k, v, mask);
    const lin = linearAttention(q, k, v);
    const na = na1d(q, k, v, { kernelSize: 3 });
    const m = mergeAttention([a, a]);
    for (const bad of [5, 'x', null, [1]]) {
      expectError(() => attentionBackward(q, k, v, a.out, a.lse, a.out, bad as never), { code: 'ERR_ATTNKIT_ARGUMENT', op: 'attentionBackward', argument: 'options' });
      expectError(() => blockSparseAttentionBackward(q, k, v, mask, bs.out, bs.lse, bs.out, bad as never), { code: 'ERR_ATTNKIT_ARGUMENT', op: 'blockSparseAttentionBackward', argument: 'options' });
      expectError(() => linearAttentionBackward(q, k, v, lin.out, bad as never), { code: 'ERR_ATTNKIT_ARGUMENT', op: 'linearAttentionBackward', argument: 'options' });
      expectError(() => na1dBackward(q, k, v, na.out, na.lse, na.out, bad as never), { code: 'ERR_ATTNKIT_ARGUMENT', op: 'na1dBackward', argument: 'options' });
      expectError(() => mergeAttentionBackward([a, a], m.out, m.lse, m.out, bad as never), { code: 'ERR_ATTNKIT_ARGUMENT', op: 'mergeAttentionBackward', argument: 'options' });
    }
    expectError(() => na1dBackward(q, k, v, na.out, na.lse, na.out, undefined as never), { code: 'ERR_ATTNKIT_ARGUMENT', op: 'na1dBackward', argument: 'options' });
    disposeAll(q, k, v);
  });

  it("tensor(['a']) and tensor([true]) are refused (not NaN or 1); other typed arrays too", () => {
    expectError(() => tensor(['a'] as never), { code: 'ERR_ATTNKIT_ARGUMENT', op: 'tensor', argument: 'data', has: ['received "a" at index 0'] });
    expectError(() => tensor([1, true] as never), { code: 'ERR_ATTNKIT_ARGUMENT', op: 'tensor', argument: 'data', has: ['true at index 1'] });
    expectError(() => tensor(new Int16Array(2) as never), { code: 'ERR_ATTNKIT_ARGUMENT', op: 'tensor', argument: 'data', has: ['received a Int16Array'] });
    expectError(() => tensor([1, 2], null as never), { code: 'ERR_ATTNKIT_SHAPE', op: 'tensor', argument: 'shape' });
  });

  it('randn: seed null is refused; only an absent seed is random', async () => {
    expectError(() => randn([2], { seed: null as never }), { code: 'ERR_ATTNKIT_ARGUMENT', op: 'randn', argument: 'seed', has: ['received null'] });
    const a = randn([64]);
    const b = randn([64]);
    expect(await a.toArray()).not.toEqual(await b.toArray());
    disposeAll(a, b);
  });

  it('shape extents are safe integers even when another extent is 0 (found by the fuzz)', () => {
    expectError(() => zeros([1, 0, 3e40]), { code: 'ERR_ATTNKIT_SHAPE', op: 'zeros', argument: 'shape', has: ['3e+40 at position 2'] });
    const t = zeros([3, 0, 1]);
    expectError(() => t.reshape([1, 0, 3e40]), { code: 'ERR_ATTNKIT_SHAPE', op: 'reshape', argument: 'shape' });
    t.dispose();
  });

  it('null is a value, not an absent option (found by the fuzz)', () => {
    expectError(() => BlockMask.documents([4], { blockK: null } as never), { code: 'ERR_ATTNKIT_ARGUMENT', op: 'BlockMask.documents', argument: 'blockK' });
    expectError(() => BlockMask.fromPredicate(() => true, { B: null, Nq: 4, Nk: 4 } as never), { code: 'ERR_ATTNKIT_SHAPE', op: 'BlockMask.fromPredicate', argument: 'B' });
    expectError(() => zeros([2], { dtype: null } as never), { code: 'ERR_ATTNKIT_DTYPE', op: 'zeros', argument: 'dtype' });
    expectError(() => tensor([1], [1], { device: null } as never), { code: 'ERR_ATTNKIT_DEVICE', op: 'tensor', argument: 'device' });
    const { q, k, v } = qkv();
    expectError(() => attention(q, k, v, { window: [2 ** 31, 0] }), { code: 'ERR_ATTNKIT_ARGUMENT', op: 'attention', argument: 'window', has: ['< 2^31'] });
    disposeAll(q, k, v);
  });

  it('toArray options are checked', async () => {
    const t = zeros([2]);
    await expect(t.toArray(null as never)).rejects.toMatchObject({ code: 'ERR_ATTNKIT_ARGUMENT', op: 'toArray', argument: 'options' });
    await expect(t.toArray({ raw: 'yes' } as never)).rejects.toMatchObject({ code: 'ERR_ATTNKIT_ARGUMENT', op: 'toArray', argument: 'raw' });
    t.dispose();
  });
});

describe('BlockMask.fromData takes Int32Array/Uint32Array lists only', () => {
  const g = { B: 1, H: 1, Nq: 64, Nk: 64, blockQ: 64, blockK: 64 };
  const ok = () => ({ fullOffsets: new Int32Array([0, 1]), fullIndices: new Int32Array([0]), partialOffsets: new Int32Array([0, 0]), partialIndices: new Int32Array(0), partialBits: new Uint32Array(0) });
  it('a valid mask', async () => {
    expect(await BlockMask.fromData(g, ok()).density()).toBe(1);
  });
  it.each(['fullOffsets', 'fullIndices', 'partialOffsets', 'partialIndices', 'partialBits'] as const)('%s as a plain array, a Float32Array, missing', (name) => {
    for (const bad of [Array.from(ok()[name]), new Float32Array(ok()[name].length), undefined]) {
      expectError(() => BlockMask.fromData(g, { ...ok(), [name]: bad } as never), { code: 'ERR_ATTNKIT_ARGUMENT', op: 'BlockMask.fromData', argument: name, has: ['Int32Array or a Uint32Array'] });
    }
  });
  it('lists of the wrong length name the list and fromData', () => {
    expectError(() => BlockMask.fromData(g, { ...ok(), fullOffsets: new Int32Array([0, 1, 1]) }), { code: 'ERR_ATTNKIT_SHAPE', op: 'BlockMask.fromData', argument: 'fullOffsets' });
    expectError(() => BlockMask.fromData(g, { ...ok(), fullIndices: new Int32Array([0, 0]) }), { code: 'ERR_ATTNKIT_SHAPE', op: 'BlockMask.fromData', argument: 'fullOffsets' });
    expectError(() => BlockMask.fromData(g, { ...ok(), partialBits: new Uint32Array(3) }), { code: 'ERR_ATTNKIT_SHAPE', op: 'BlockMask.fromData', argument: 'partialBits' });
    expectError(() => BlockMask.fromData(g, null as never), { code: 'ERR_ATTNKIT_ARGUMENT', op: 'BlockMask.fromData', argument: 'data' });
  });
});

describe('mobaMask topK', () => {
  it('bounded: refused at once as mobaMask (not an allocation failure named empty)', () => {
    const q = randn([1, 64, 1, 8], { seed: 1 });
    expectFastError(() => mobaMask(q, q, { blockSize: 16, topK: 2 ** 31 }), { code: 'ERR_ATTNKIT_SHAPE', op: 'mobaMask', argument: 'topK', has: ['under 2^31 elements'] });
    expectFastError(() => mobaMask(q, q, { blockSize: 16, topK: 2 ** 25 }), { code: 'ERR_ATTNKIT_SHAPE', op: 'mobaMask', argument: 'topK' });
    expectError(() => mobaMask(q, q, { blockSize: 16, topK: 1.5 }), { code: 'ERR_ATTNKIT_ARGUMENT', op: 'mobaMask', argument: 'topK' });
    expectError(() => mobaMask(q, q, { blockSize: 16, topK: 2n } as never), { code: 'ERR_ATTNKIT_ARGUMENT', op: 'mobaMask', argument: 'topK', has: ['received 2n'] });
    q.dispose();
  });
});
