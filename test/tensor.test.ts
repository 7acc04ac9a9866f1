/**
 * Tensors (DESIGN §2): factories, read-back types, dtype conversion, dispose and memory accounting,
 * use after dispose, randn determinism (across runs and thread counts) and the FinalizationRegistry
 * safety net.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import {
  AttnkitError,
  Stream,
  Tensor,
  attention,
  empty,
  memory,
  randn,
  synchronize,
  tensor,
  zeros,
} from '../src/index.ts';

const run = promisify(execFile);
const root = fileURLToPath(new URL('..', import.meta.url));
const fixture = (name: string) => join(root, 'test', 'fixtures', name);

/** Compiles the TypeScript sources to a private folder (for child processes); returns index.js. */
async function buildDist(): Promise<{ index: string; dir: string }> {
  const dir = join(root, 'node_modules', '.cache', `attnkit-test-dist-tensor-${process.pid}`);
  await run(process.execPath, [join(root, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', join(root, 'tsconfig.json'), '--outDir', dir]);
  return { index: join(dir, 'src', 'index.js'), dir };
}

function expectAttnkitError(fn: () => unknown, code: string, extra: Record<string, unknown> = {}): AttnkitError {
  let caught: unknown;
  try {
    fn();
  } catch (e) {
    caught = e;
  }
  expect(caught).toBeInstanceOf(AttnkitError);
  const err = caught as AttnkitError;
  expect(err.code).toBe(code);
  for (const [k, v] of Object.entries(extra)) expect((err as unknown as Record<string, unknown>)[k]).toBe(v);
  return err;
}

async function expectRejects(p: Promise<unknown>, code: string): Promise<AttnkitError> {
  let caught: unknown;
  try {
    await p;
  } catch (e) {
    caught = e;
  }
  expect(caught).toBeInstanceOf(AttnkitError);
  expect((caught as AttnkitError).code).toBe(code);
  return caught as AttnkitError;
}

const sha = (a: ArrayBufferView) => createHash('sha256').update(new Uint8Array(a.buffer, a.byteOffset, a.byteLength)).digest('hex');

describe('factories', () => {
  it('tensor() from number[]: float32, shape defaults to [length]', async () => {
    const t = tensor([1, 2.5, -3, 0.1]);
    expect(t).toBeInstanceOf(Tensor);
    expect(t.dtype).toBe('float32');
    expect(t.shape).toEqual([4]);
    expect(t.size).toBe(4);
    expect(t.device).toBe('cpu');
    expect(t.bytes).toBe(16);
    expect(t.disposed).toBe(false);
    const a = await t.toArray();
    expect(a).toBeInstanceOf(Float32Array);
    expect(Array.from(a)).toEqual([1, 2.5, -3, Math.fround(0.1)]);
    expect(t.toString()).toBe('Tensor(float32, [4], cpu)');
    t.dispose();
  });

  it('tensor() with a shape; the shape is copied and frozen', async () => {
    const shape = [2, 3];
    const t = tensor([1, 2, 3, 4, 5, 6], shape);
    shape[0] = 99;
    expect(t.shape).toEqual([2, 3]);
    expect(Object.isFrozen(t.shape)).toBe(true);
    expect(t.size).toBe(6);
    expect(Array.from(await t.toArray())).toEqual([1, 2, 3, 4, 5, 6]);
    t.dispose();
  });

  it('tensor() from Float64Array rounds to float32', async () => {
    const src = new Float64Array([0.1, 1 / 3, 1e-50, 1e50, -0]);
    const t = tensor(src, [5]);
    expect(t.dtype).toBe('float32');
    const a = await t.toArray();
    expect(Array.from(a)).toEqual([Math.fround(0.1), Math.fround(1 / 3), 0, Infinity, -0]);
    expect(Object.is(a[4], -0)).toBe(true);
    t.dispose();
  });

  it('tensor() from a Float32Array subarray copies the viewed elements only', async () => {
    const base = new Float32Array([9, 1, 2, 3, 9]);
    const t = tensor(base.subarray(1, 4));
    base[2] = 42; // a copy was taken
    expect(Array.from(await t.toArray())).toEqual([1, 2, 3]);
    t.dispose();
  });

  it('tensor() from Int32Array defaults to int32 and reads back an Int32Array', async () => {
    const src = new Int32Array([0, -1, 2147483647, -2147483648, 12345]);
    const t = tensor(src, [5]);
    expect(t.dtype).toBe('int32');
    expect(t.bytes).toBe(20);
    const a = await t.toArray();
    expect(a).toBeInstanceOf(Int32Array);
    expect(Array.from(a)).toEqual([0, -1, 2147483647, -2147483648, 12345]);
    t.dispose();
  });

  it('tensor() from Int32Array with dtype float32 converts the values', async () => {
    const t = tensor(new Int32Array([1, -5, 16777217]), [3], { dtype: 'float32' });
    expect(t.dtype).toBe('float32');
    expect(Array.from(await t.toArray())).toEqual([1, -5, 16777216]);
    t.dispose();
  });

  it('tensor() from Uint8Array defaults to uint8 and reads back a Uint8Array', async () => {
    const src = Uint8Array.from({ length: 256 }, (_, i) => i);
    const t = tensor(src, [16, 16]);
    expect(t.dtype).toBe('uint8');
    expect(t.bytes).toBe(256);
    const a = await t.toArray();
    expect(a).toBeInstanceOf(Uint8Array);
    expect(Array.from(a)).toEqual(Array.from(src));
    t.dispose();
  });

  it('tensor() from number[] with integer dtypes', async () => {
    const i = tensor([3, -7, 100000], [3], { dtype: 'int32' });
    expect(Array.from(await i.toArray())).toEqual([3, -7, 100000]);
    const u = tensor([0, 7, 255], [3], { dtype: 'uint8' });
    expect(Array.from(await u.toArray())).toEqual([0, 7, 255]);
    i.dispose();
    u.dispose();
  });

  it('tensor() from Uint16Array takes raw float16/bfloat16 bits', async () => {
    const h = tensor(new Uint16Array([0x3c00, 0xc000, 0x7c00, 0x0001]), [4], { dtype: 'float16' });
    expect(h.dtype).toBe('float16');
    expect(h.bytes).toBe(8);
    expect(Array.from(await h.toArray())).toEqual([1, -2, Infinity, 2 ** -24]);
    const raw = await h.toArray({ raw: true });
    expect(raw).toBeInstanceOf(Uint16Array);
    expect(Array.from(raw)).toEqual([0x3c00, 0xc000, 0x7c00, 0x0001]);
    const b = tensor(new Uint16Array([0x3f80, 0x4049, 0xff80]), [3], { dtype: 'bfloat16' });
    expect(Array.from(await b.toArray())).toEqual([1, 3.140625, -Infinity]);
    expect(Array.from((await b.toArray({ raw: true })) as Uint16Array)).toEqual([0x3f80, 0x4049, 0xff80]);
    h.dispose();
    b.dispose();
  });

  it('tensor() from Uint16Array needs a 16-bit float dtype', () => {
    const err = expectAttnkitError(() => tensor(new Uint16Array([1, 2]), [2], { dtype: 'float32' }), 'ERR_ATTNKIT_DTYPE', {
      op: 'tensor',
      argument: 'dtype',
    });
    expect(err.message).toContain('Uint16Array');
    expectAttnkitError(() => tensor(new Uint16Array([1, 2])), 'ERR_ATTNKIT_DTYPE');
  });

  it('toArray() types per dtype: float16/bfloat16 widen to Float32Array, raw gives Uint16Array', async () => {
    const cases = [
      ['float32', Float32Array, Float32Array],
      ['float16', Float32Array, Uint16Array],
      ['bfloat16', Float32Array, Uint16Array],
      ['int32', Int32Array, Int32Array],
      ['uint8', Uint8Array, Uint8Array],
    ] as const;
    for (const [dtype, plain, raw] of cases) {
      const t = zeros([3, 2], { dtype });
      const a = await t.toArray();
      expect(a, dtype).toBeInstanceOf(plain);
      expect(a.length).toBe(6);
      const r = await t.toArray({ raw: true });
      expect(r, dtype).toBeInstanceOf(raw);
      expect(r.length).toBe(6);
      t.dispose();
    }
  });

  it('empty() and zeros(): shape, dtype, size, bytes for every dtype; zeros are zero', async () => {
    const bytesPer = { float32: 4, float16: 2, bfloat16: 2, int32: 4, uint8: 1 } as const;
    for (const dtype of Object.keys(bytesPer) as (keyof typeof bytesPer)[]) {
      const e = empty([3, 5, 7], { dtype });
      expect(e.dtype).toBe(dtype);
      expect(e.shape).toEqual([3, 5, 7]);
      expect(e.size).toBe(105);
      expect(e.bytes).toBe(105 * bytesPer[dtype]);
      expect(e.device).toBe('cpu');
      const z = zeros([1000, 3], { dtype, device: 'cpu' });
      expect(z.bytes).toBe(3000 * bytesPer[dtype]);
      const raw = await z.toArray({ raw: true });
      expect(raw.length).toBe(3000);
      expect(raw.every((x) => x === 0)).toBe(true);
      e.dispose();
      z.dispose();
    }
  });

  it('empty() defaults to float32; zero-sized and scalar shapes', async () => {
    const e = empty([4]);
    expect(e.dtype).toBe('float32');
    const z = zeros([2, 0, 3]);
    expect(z.size).toBe(0);
    expect(z.bytes).toBe(0);
    expect((await z.toArray()).length).toBe(0);
    const s = zeros([]);
    expect(s.size).toBe(1);
    expect(s.shape).toEqual([]);
    expect(Array.from(await s.toArray())).toEqual([0]);
    for (const t of [e, z, s]) t.dispose();
  });

  it('randn(): shape, dtype, and finite values', async () => {
    const t = randn([4, 8, 16], { seed: 7 });
    expect(t.dtype).toBe('float32');
    expect(t.shape).toEqual([4, 8, 16]);
    expect(t.size).toBe(512);
    expect(t.bytes).toBe(2048);
    expect(t.device).toBe('cpu');
    const a = await t.toArray();
    expect(a.every((x) => Number.isFinite(x))).toBe(true);
    expect(new Set(a).size).toBeGreaterThan(500);
    t.dispose();
  });

  it('randn() in float16/bfloat16 gives the same numbers rounded', async () => {
    const f = randn([3000], { seed: 11 });
    for (const dtype of ['float16', 'bfloat16'] as const) {
      const h = randn([3000], { seed: 11, dtype });
      expect(h.dtype).toBe(dtype);
      expect(h.bytes).toBe(6000);
      const rounded = f.to(dtype);
      expect(Array.from((await h.toArray({ raw: true })) as Uint16Array)).toEqual(
        Array.from((await rounded.toArray({ raw: true })) as Uint16Array),
      );
      h.dispose();
      rounded.dispose();
    }
    f.dispose();
  });

  it('randn() rejects integer dtypes and bad seeds', () => {
    expectAttnkitError(() => randn([4], { dtype: 'int32' }), 'ERR_ATTNKIT_DTYPE', { op: 'randn', argument: 'dtype' });
    expectAttnkitError(() => randn([4], { seed: -1 }), 'ERR_ATTNKIT_ARGUMENT', { op: 'randn', argument: 'seed' });
    expectAttnkitError(() => randn([4], { seed: 1.5 }), 'ERR_ATTNKIT_ARGUMENT', { op: 'randn', argument: 'seed' });
    expectAttnkitError(() => randn([4], { seed: 2 ** 53 }), 'ERR_ATTNKIT_ARGUMENT', { op: 'randn', argument: 'seed' });
  });
});

describe('to()', () => {
  it("float32 -> bfloat16 -> float32 equals the rounding of each value", async () => {
    const vals = [1, 1 + 2 ** -8, 1 + 3 * 2 ** -8, Math.PI, -1e-3, 65504, 3e38, -0];
    const t = tensor(vals);
    const b = t.to('bfloat16');
    expect(b.dtype).toBe('bfloat16');
    expect(b.shape).toEqual([8]);
    expect(b).not.toBe(t);
    const back = b.to('float32');
    expect(back.dtype).toBe('float32');
    // bfloat16 keeps the top 16 bits of float32, rounded to nearest even
    // -1e-3 = 0xba83126f -> 0xba83; 65504 = 0x477fe000 -> 0x4780; 3e38 = 0x7f61b1e6 -> 0x7f62
    const got = await back.toArray();
    expect(Array.from(got)).toEqual([1, 1, 1 + 2 ** -6, 3.140625, -0.00099945068359375, 65536, 3.00405527047391e38, -0]);
    expect(Object.is(got[7], -0)).toBe(true);
    expect(Array.from((await b.toArray({ raw: true })) as Uint16Array)).toEqual([
      0x3f80, 0x3f80, 0x3f82, 0x4049, 0xba83, 0x4780, 0x7f62, 0x8000,
    ]);
    for (const x of [t, b, back]) x.dispose();
  });

  it('float32 -> float16 -> float32, and float16 -> bfloat16', async () => {
    const t = tensor([0.1, 65519, 1e-8, -70000, 2 ** -24]);
    const h = t.to('float16');
    expect(Array.from((await h.toArray({ raw: true })) as Uint16Array)).toEqual([0x2e66, 0x7bff, 0x0000, 0xfc00, 0x0001]);
    const hf = h.to('float32');
    expect(Array.from(await hf.toArray())).toEqual([0.0999755859375, 65504, 0, -Infinity, 2 ** -24]);
    hf.dispose();
    const hb = h.to('bfloat16');
    // 0.0999755859375 = 0x3dccc000 in float32 -> bfloat16 0x3dcd (0xc000 > half)
    expect(Array.from((await hb.toArray({ raw: true })) as Uint16Array)).toEqual([0x3dcd, 0x4780, 0x0000, 0xff80, 0x3380]);
    for (const x of [t, h, hb]) x.dispose();
  });

  it('integer <-> float conversion of exact integers', async () => {
    const i = tensor(new Int32Array([1, -5, 16777217, 0]));
    const f = i.to('float32');
    expect(Array.from(await f.toArray())).toEqual([1, -5, 16777216, 0]);
    const fsrc = tensor([3, -4, 100]);
    const back = fsrc.to('int32');
    expect(back.dtype).toBe('int32');
    expect(Array.from(await back.toArray())).toEqual([3, -4, 100]);
    const usrc = tensor(new Uint8Array([0, 200, 255]));
    const u = usrc.to('float16');
    expect(Array.from(await u.toArray())).toEqual([0, 200, 255]);
    for (const x of [i, f, fsrc, back, usrc, u]) x.dispose();
  });

  it("the same dtype and to('cpu') return the tensor itself", () => {
    const t = tensor([1, 2]);
    expect(t.to('float32')).toBe(t);
    expect(t.to('cpu')).toBe(t);
    t.dispose();
  });

  it('to() with a bad target throws ERR_ATTNKIT_DEVICE', () => {
    const t = tensor([1, 2]);
    const e = expectAttnkitError(() => t.to('gpu' as never), 'ERR_ATTNKIT_DEVICE', { op: 'to', argument: 'target' });
    expect(e.message).toContain('gpu');
    t.dispose();
  });

  it('a conversion enqueued before the source is disposed still completes with the right values', async () => {
    const s = new Stream();
    s.native.sleep(100);
    const src = randn([5000], { seed: 3, stream: s });
    const h = src.to('float16');
    src.dispose();
    const again = randn([5000], { seed: 3, dtype: 'float16' });
    expect(Array.from((await h.toArray({ raw: true })) as Uint16Array)).toEqual(
      Array.from((await again.toArray({ raw: true })) as Uint16Array),
    );
    h.dispose();
    again.dispose();
  });
});

describe('dispose() and memory()', () => {
  it('dispose() is idempotent and sets disposed and bytes', () => {
    const t = zeros([10, 10]);
    expect(t.bytes).toBe(400);
    t.dispose();
    expect(t.disposed).toBe(true);
    expect(t.bytes).toBe(0);
    expect(t.toString()).toBe('Tensor(float32, [10, 10], cpu, disposed)');
    expect(() => t.dispose()).not.toThrow();
    expect(t.disposed).toBe(true);
    // shape and dtype stay readable
    expect(t.shape).toEqual([10, 10]);
    expect(t.dtype).toBe('float32');
  });

  it('memory().cpu grows by exactly the bytes allocated and shrinks on dispose', async () => {
    await synchronize();
    const m0 = memory().cpu;
    expect(typeof m0).toBe('number');
    const a = empty([1000], { dtype: 'float16' });
    expect(memory().cpu - m0).toBe(2000);
    const b = zeros([7, 3], { dtype: 'uint8' });
    expect(memory().cpu - m0).toBe(2021);
    const c = tensor(new Int32Array(13));
    expect(memory().cpu - m0).toBe(2021 + 52);
    a.dispose();
    expect(memory().cpu - m0).toBe(21 + 52);
    a.dispose();
    expect(memory().cpu - m0).toBe(21 + 52);
    b.dispose();
    c.dispose();
    expect(memory().cpu).toBe(m0);
  });

  it('memory stays until enqueued work on a disposed tensor has finished, then is released', async () => {
    const s = new Stream();
    await synchronize();
    const m0 = memory().cpu;
    s.native.sleep(150);
    const t = randn([10000], { seed: 1, stream: s });
    expect(memory().cpu - m0).toBe(40000);
    t.dispose();
    expect(t.bytes).toBe(0);
    expect(memory().cpu - m0).toBe(40000); // the queued randn still holds the storage
    await s.synchronize();
    expect(memory().cpu).toBe(m0);
  });

  it('attention outputs are counted and released', async () => {
    const q = randn([1, 8, 2, 4], { seed: 1 });
    await synchronize();
    const m0 = memory().cpu;
    const r = attention(q, q, q);
    expect(memory().cpu - m0).toBe(8 * 2 * 4 * 4 + 8 * 2 * 4);
    await r.out.toArray();
    r.out.dispose();
    r.lse.dispose();
    await synchronize();
    expect(memory().cpu).toBe(m0);
    q.dispose();
  });
});

describe('use after dispose', () => {
  it('toArray() rejects with ERR_ATTNKIT_DISPOSED', async () => {
    const t = tensor([1, 2, 3]);
    t.dispose();
    const e = await expectRejects(t.toArray(), 'ERR_ATTNKIT_DISPOSED');
    expect(e.op).toBe('toArray');
    expect(e.message).toContain('disposed');
    await expectRejects(t.toArray({ raw: true }), 'ERR_ATTNKIT_DISPOSED');
  });

  it('to() throws ERR_ATTNKIT_DISPOSED', () => {
    const t = tensor([1, 2, 3]);
    t.dispose();
    expectAttnkitError(() => t.to('float16'), 'ERR_ATTNKIT_DISPOSED', { op: 'to' });
    expectAttnkitError(() => t.to('cpu'), 'ERR_ATTNKIT_DISPOSED', { op: 'to' });
  });

  it('as an op argument throws ERR_ATTNKIT_DISPOSED naming the argument', () => {
    const q = randn([1, 4, 1, 8], { seed: 1 });
    const k = randn([1, 4, 1, 8], { seed: 2 });
    const v = randn([1, 4, 1, 8], { seed: 3 });
    k.dispose();
    const e = expectAttnkitError(() => attention(q, k, v), 'ERR_ATTNKIT_DISPOSED', { op: 'attention', argument: 'k' });
    expect(e.message).toBe("attention: 'k' was disposed and cannot be used");
    q.dispose();
    v.dispose();
  });
});

describe('randn determinism and statistics', () => {
  it('the same seed gives identical bits; a prefix is the smaller tensor (counter-based)', async () => {
    const a = randn([100003], { seed: 42 });
    const b = randn([100003], { seed: 42 });
    const c = randn([17], { seed: 42 });
    const av = await a.toArray();
    const bv = await b.toArray();
    expect(sha(av)).toBe(sha(bv));
    expect(Array.from(await c.toArray())).toEqual(Array.from(av.subarray(0, 17)));
    for (const t of [a, b, c]) t.dispose();
  });

  it('different seeds differ (including seeds that differ above 2^32)', async () => {
    const seeds = [0, 1, 2, 2 ** 32, 2 ** 32 + 1, 2 ** 53 - 1];
    const hashes = new Set<string>();
    for (const seed of seeds) {
      const t = randn([1000], { seed });
      hashes.add(sha(await t.toArray()));
      t.dispose();
    }
    expect(hashes.size).toBe(seeds.length);
  });

  it('without a seed, two calls differ', async () => {
    const a = randn([64]);
    const b = randn([64]);
    expect(sha(await a.toArray())).not.toBe(sha(await b.toArray()));
    a.dispose();
    b.dispose();
  });

  it('is standard normal (n = 1e5)', async () => {
    const t = randn([100000], { seed: 2024 });
    const x = await t.toArray();
    t.dispose();
    let sum = 0;
    let sq = 0;
    let within1 = 0;
    let within2 = 0;
    let pos = 0;
    let nonFinite = 0;
    for (const v of x) {
      if (!Number.isFinite(v)) nonFinite++;
      sum += v;
      sq += v * v;
      if (Math.abs(v) < 1) within1++;
      if (Math.abs(v) < 2) within2++;
      if (v > 0) pos++;
    }
    const n = x.length;
    expect(nonFinite).toBe(0);
    const mean = sum / n;
    const variance = sq / n - mean * mean;
    expect(Math.abs(mean)).toBeLessThan(0.02); // sd of the mean: 0.0032
    expect(Math.abs(variance - 1)).toBeLessThan(0.03); // sd of the variance: 0.0045
    expect(Math.abs(within1 / n - 0.6827)).toBeLessThan(0.01);
    expect(Math.abs(within2 / n - 0.9545)).toBeLessThan(0.007);
    expect(Math.abs(pos / n - 0.5)).toBeLessThan(0.01);
    // even and odd elements (the two Box-Muller outputs) are each standard normal and uncorrelated
    let cov = 0;
    let se = 0;
    let so = 0;
    for (let i = 0; i + 1 < n; i += 2) {
      cov += x[i]! * x[i + 1]!;
      se += x[i]! * x[i]!;
      so += x[i + 1]! * x[i + 1]!;
    }
    expect(Math.abs(cov / (n / 2))).toBeLessThan(0.03);
    expect(Math.abs(se / (n / 2) - 1)).toBeLessThan(0.04);
    expect(Math.abs(so / (n / 2) - 1)).toBeLessThan(0.04);
  });

  it('gives identical bits for every thread count (child processes with ATTNKIT_NUM_THREADS)', async () => {
    const n = 100001; // several parallel chunks
    const seed = 123456789;
    const here = randn([n], { seed });
    const local = sha(await here.toArray());
    const head = Array.from((await here.toArray()).subarray(0, 4));
    here.dispose();
    const results = [];
    for (const threads of ['1', '2', '3']) {
      const { stdout } = await run(process.execPath, [fixture('randn-child.mjs'), root, String(n), String(seed)], {
        env: { ...process.env, ATTNKIT_NUM_THREADS: threads },
        timeout: 20_000,
      });
      results.push(JSON.parse(stdout) as { threads: number; n: number; sha256: string; head: number[] });
    }
    expect(results.map((r) => r.threads)).toEqual([1, 2, 3]);
    for (const r of results) {
      expect(r.n).toBe(n);
      expect(r.head).toEqual(head);
      expect(r.sha256).toBe(local);
    }
  });
});

describe('FinalizationRegistry safety net', () => {
  let dist: { index: string; dir: string };
  beforeAll(async () => {
    dist = await buildDist();
  });
  afterAll(async () => {
    if (dist) await rm(dist.dir, { recursive: true, force: true });
  });

  it('tensors dropped without dispose() are released after garbage collection', async () => {
    const { stdout } = await run(process.execPath, ['--expose-gc', fixture('finalization-child.mjs'), dist.index], {
      timeout: 30_000,
    });
    const r = JSON.parse(stdout) as { baseline: number; allocated: number; final: number; rounds: number };
    expect(r.allocated).toBe(20 * 256 * 1024 * 4 + 10 * 64 * 1024 * 2);
    expect(r.final).toBe(r.baseline);
  });
});

describe('reshape (views)', () => {
  it('shares the storage: the view reads the same values with the new shape, and allocates nothing', async () => {
    const t = tensor(Float32Array.from({ length: 24 }, (_, i) => i), [2, 3, 4]);
    const before = memory().cpu;
    const v = t.reshape([6, 4]);
    expect(memory().cpu).toBe(before);
    expect(v.shape).toEqual([6, 4]);
    expect(v.dtype).toBe('float32');
    expect(Array.from(await v.toArray())).toEqual(Array.from({ length: 24 }, (_, i) => i));
    t.dispose();
  });

  it('disposing a view keeps the storage; disposing the owner retires every view', async () => {
    const t = tensor([1, 2, 3, 4], [4]);
    const v = t.reshape([2, 2]);
    const w = t.reshape([1, 4]);
    v.dispose();
    expect(v.disposed).toBe(true);
    expect(t.disposed).toBe(false);
    expect(Array.from(await w.toArray())).toEqual([1, 2, 3, 4]);
    const bytes = memory().cpu;
    t.dispose();
    expect(memory().cpu).toBe(bytes - 16);
    expect(w.disposed).toBe(true);
    await expect(w.toArray()).rejects.toMatchObject({ code: 'ERR_ATTNKIT_DISPOSED', op: 'toArray' });
  });

  it('rejects a shape with another element count, naming both shapes', () => {
    const t = tensor([1, 2, 3, 4, 5, 6], [6]);
    try {
      t.reshape([4, 2]);
      expect.unreachable('reshape accepted 8 elements for 6');
    } catch (e) {
      expect(e).toBeInstanceOf(AttnkitError);
      expect((e as AttnkitError).code).toBe('ERR_ATTNKIT_SHAPE');
      expect((e as AttnkitError).message).toBe("reshape: expected 'shape' to hold 6 elements (as [6]), received [4, 2] (8 elements)");
    }
    t.dispose();
  });
});
