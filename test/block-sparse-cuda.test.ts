/**
 * Block-sparse attention on CUDA through the public API (native/cuda/block_sparse/,
 * docs/cuda-kernels.md "The blockSparse family"): forward and backward against the float64
 * reference (bound: 2x, gradients 3x, the error of a naive implementation in the dtype, plus 1e-3 of
 * the largest reference value) and against the CPU backend, for the block geometries the issue names
 * (64x64, 128x128, 128x64, 64x128, key blocks 16 and 32 under 64-row query blocks) and a 16x128 one,
 * float16 and bfloat16, GQA, Nq != Nk, masks shared over batch or heads, rows with no listed block;
 * the BlockMask's device side: `to(device)` uploads once and caches, a host mask meets CUDA tensors
 * through that copy, the device plan is built by the first op and reused (bitwise the same results),
 * ops on another stream wait for the mask's upload; and the bad inputs: a mask of another geometry,
 * on another device, or disposed gets an AttnkitError naming op and argument; inputs are never written.
 * Runs where a CUDA device is present — the fake-CUDA addon's nested run (test/fake-cuda/
 * vitest.config.ts) puts one here on the SIMT emulator; skipped visibly otherwise.
 */
import { afterAll, describe, expect, it } from 'vitest';
import {
  AttnkitError,
  BlockMask,
  Stream,
  blockSparseAttention,
  blockSparseAttentionBackward,
  cuda,
  defaultStream,
  mobaMask,
  randn,
  xattentionMask,
  synchronize,
  type FloatDType,
  type Tensor,
} from '../src/index.ts';
import { referenceBlockSparse, referenceBlockSparseBackward } from '../src/reference/block-sparse.ts';
import { referenceMobaSelect, referenceXattentionSelect } from '../src/reference/selection.ts';
import { maxAbs, maxAbsErr, naiveMasked, read64, type Shape } from './helpers.ts';

const HAS_CUDA = cuda.available();
const owned: Tensor[] = [];
const keep = <T extends Tensor>(t: T): T => (owned.push(t), t);
afterAll(async () => {
  if (!HAS_CUDA) return;
  await synchronize();
  owned.forEach((t) => t.dispose());
});

interface Run {
  s: Shape;
  dtype: FloatDType;
  host: { q: Tensor; k: Tensor; v: Tensor; dO: Tensor };
  dev: { q: Tensor; k: Tensor; v: Tensor; dO: Tensor };
  vals: { q: Float64Array; k: Float64Array; v: Float64Array; dO: Float64Array };
}

async function inputs(s: Shape, dtype: FloatDType, seed: number): Promise<Run> {
  const make = (shape: number[], i: number) => keep(randn(shape, { seed: seed + i, dtype }));
  const host = { q: make([s.B, s.Nq, s.H, s.D], 0), k: make([s.B, s.Nk, s.Hkv, s.D], 1), v: make([s.B, s.Nk, s.Hkv, s.Dv], 2), dO: make([s.B, s.Nq, s.H, s.Dv], 3) };
  const dev = { q: keep(host.q.to('cuda:0')), k: keep(host.k.to('cuda:0')), v: keep(host.v.to('cuda:0')), dO: keep(host.dO.to('cuda:0')) };
  const vals = { q: await read64(host.q), k: await read64(host.k), v: await read64(host.v), dO: await read64(host.dO) };
  return { s, dtype, host, dev, vals };
}

/** Forward and backward on CUDA against the float64 reference (naive-rule bound) and the CPU backend. */
async function check(r: Run, mask: BlockMask, what: string): Promise<void> {
  const { s, dtype } = r;
  const dense = await mask.toDense();
  const allows = (i: number, j: number, b: number, h: number) => dense[(((b % mask.B) * mask.H + (h % mask.H)) * s.Nq + i) * s.Nk + j] === 1;
  const p = { ...s, q: r.vals.q, k: r.vals.k, v: r.vals.v };
  const m = { data: dense, B: mask.B, H: mask.H };
  const ref = referenceBlockSparse(p, m);
  const rg = referenceBlockSparseBackward(p, m, r.vals.dO);
  const naive = naiveMasked(p, allows, 1 / Math.sqrt(s.D), dtype, { dOut: r.vals.dO });
  const gpu = blockSparseAttention(r.dev.q, r.dev.k, r.dev.v, mask.to('cuda:0'));
  const gg = gpu.backward(r.dev.dO);
  const cpu = blockSparseAttention(r.host.q, r.host.k, r.host.v, mask);
  const cg = cpu.backward(r.host.dO);
  const rows: [string, Tensor, Tensor, ArrayLike<number>, ArrayLike<number>, number][] = [
    ['out', gpu.out, cpu.out, ref.out, naive.out, 2],
    ['dq', gg.dq, cg.dq, rg.dq, naive.dq, 3],
    ['dk', gg.dk, cg.dk, rg.dk, naive.dk, 3],
    ['dv', gg.dv, cg.dv, rg.dv, naive.dv, 3],
  ];
  for (const [name, got, onCpu, want, nv, factor] of rows) {
    keep(got);
    keep(onCpu);
    const g = await read64(got);
    const bound = factor * maxAbsErr(nv, want) + 1e-3 * Math.max(maxAbs(want), 1);
    expect(maxAbsErr(g, want), `${what} ${dtype}: ${name} vs float64`).toBeLessThanOrEqual(bound);
    expect(maxAbsErr(g, await read64(onCpu)), `${what} ${dtype}: ${name} vs the CPU backend`).toBeLessThanOrEqual(2 * bound);
  }
  const lse = await read64(keep(gpu.lse));
  for (let i = 0; i < lse.length; i++)
    if (ref.lse[i] === -Infinity) expect(lse[i], `${what}: a row with no listed block has LSE -inf`).toBe(-Infinity);
    else expect(Math.abs(lse[i]! - ref.lse[i]!), `${what}: lse`).toBeLessThan(2e-2);
  keep(cpu.lse);
}

describe.skipIf(!HAS_CUDA)(`block-sparse attention on cuda:0${HAS_CUDA ? '' : ' (skipped: no CUDA device)'}`, () => {
  const geometries: [number, number][] = [[64, 64], [128, 128], [128, 64], [64, 128], [64, 16], [64, 32], [16, 128]];
  for (const [bq, bk] of geometries)
    it(`blocks ${bq} x ${bk}: random partial blocks, GQA 2:1, Nq = 97 < Nk = 130, mask per head`, async () => {
      const s = { B: 1, Nq: 97, Nk: 130, H: 2, Hkv: 1, D: 32, Dv: 32 };
      const r = await inputs(s, bq === bk ? 'bfloat16' : 'float16', bq * 3 + bk);
      const mask = BlockMask.fromPredicate((_b, h, q, k) => ((q * 7 + k * 13 + h * 5) % 5 < 2 && Math.floor(k / bk) % 3 !== 1) || (k <= q && Math.floor(q / bq) !== 1), { H: 2, Nq: 97, Nk: 130, blockQ: bq, blockK: bk });
      await check(r, mask, `${bq}x${bk}`);
    });

  it('causal Nq > Nk (rows with no listed block: out 0, LSE -inf, zero dq), mask shared over B = 2 and heads, D = 64', async () => {
    const s = { B: 2, Nq: 130, Nk: 70, H: 2, Hkv: 2, D: 64, Dv: 64 };
    await check(await inputs(s, 'float16', 71), BlockMask.causal(130, 70, { blockQ: 64, blockK: 32 }), 'causal Nq > Nk');
  });

  it('to(device) uploads once and is cached; a host mask meets CUDA tensors through that copy; the plan is built once', async () => {
    const s = { B: 1, Nq: 100, Nk: 100, H: 1, Hkv: 1, D: 32, Dv: 32 };
    const r = await inputs(s, 'bfloat16', 81);
    const host = BlockMask.slidingWindow(100, 100, 30, 0, { blockQ: 32, blockK: 16 });
    const dev = host.to('cuda:0');
    expect(dev.device).toBe('cuda:0');
    expect(host.to('cuda:0')).toBe(dev);
    expect(dev.to('cuda:0')).toBe(dev);
    const bufs = dev.buffers();
    expect(bufs.every((t) => t.device === 'cuda:0')).toBe(true);
    expect(dev._devicePlan('test').build).toBe(true);
    const a = blockSparseAttention(r.dev.q, r.dev.k, r.dev.v, host); // the host mask: its cached copy
    expect(dev._devicePlan('test').build).toBe(false); // built by that call, read from now on
    const b = blockSparseAttention(r.dev.q, r.dev.k, r.dev.v, dev, { stream: new Stream('cuda:0') });
    expect(dev.buffers()).toBe(bufs);
    const [x, y] = await Promise.all([keep(a.out).toArray(), keep(b.out).toArray()]);
    expect(Buffer.from((y as Uint16Array).buffer).equals(Buffer.from((x as Uint16Array).buffer))).toBe(true);
    keep(a.lse);
    keep(b.lse);
    expect(await dev.toDense()).toEqual(await host.toDense());
    host.dispose();
    expect(dev.disposed).toBe(true);
  });

  it('a mask still being uploaded on another stream is waited for, and so is its plan, built on a third', async () => {
    const s = { B: 1, Nq: 96, Nk: 96, H: 1, Hkv: 1, D: 32, Dv: 32 };
    const r = await inputs(s, 'float16', 111);
    const geometry = { blockQ: 32, blockK: 32 };
    const first = blockSparseAttention(r.dev.q, r.dev.k, r.dev.v, BlockMask.causal(96, 96, geometry).to('cuda:0'));
    const want = await keep(first.out).toArray();
    keep(first.lse);
    defaultStream('cuda:0').native.sleep(200); // the upload below runs 200 ms later
    const mask = BlockMask.causal(96, 96, geometry).to('cuda:0');
    const [B, C] = [new Stream('cuda:0'), new Stream('cuda:0')];
    B.native.sleep(400); // and the op on B, which builds the plan, later still
    const a = blockSparseAttention(r.dev.q, r.dev.k, r.dev.v, mask, { stream: B }); // builds the plan on B
    const b = blockSparseAttention(r.dev.q, r.dev.k, r.dev.v, mask, { stream: C }); // reads it
    for (const x of [a, b]) {
      keep(x.lse);
      expect(await keep(x.out).toArray()).toEqual(want);
    }
  });

  it('inputs are never written (forward and backward)', async () => {
    const s = { B: 1, Nq: 70, Nk: 90, H: 2, Hkv: 1, D: 32, Dv: 32 };
    const r = await inputs(s, 'float16', 91);
    const mask = BlockMask.causal(70, 90, { blockQ: 16, blockK: 64 }).to('cuda:0');
    const before = await Promise.all([r.dev.q, r.dev.k, r.dev.v, r.dev.dO, ...mask.buffers()].map((t) => t.toArray()));
    const f = blockSparseAttention(r.dev.q, r.dev.k, r.dev.v, mask);
    const outBefore = await keep(f.out).toArray();
    const lseBefore = await keep(f.lse).toArray();
    const g = blockSparseAttentionBackward(r.dev.q, r.dev.k, r.dev.v, mask, f.out, f.lse, r.dev.dO);
    [g.dq, g.dk, g.dv].forEach(keep);
    await synchronize();
    const after = await Promise.all([r.dev.q, r.dev.k, r.dev.v, r.dev.dO, ...mask.buffers()].map((t) => t.toArray()));
    expect(after).toEqual(before);
    expect(await f.out.toArray()).toEqual(outBefore);
    expect(await f.lse.toArray()).toEqual(lseBefore);
    mask.dispose();
  });

  it('a mask of another geometry, on another device, or disposed: an AttnkitError naming the op and the mask', async () => {
    const s = { B: 1, Nq: 64, Nk: 64, H: 2, Hkv: 2, D: 32, Dv: 32 };
    const r = await inputs(s, 'float16', 101);
    const expectErr = (f: () => unknown, code: string, message: string) => {
      let err: unknown;
      try {
        f();
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(AttnkitError);
      expect((err as AttnkitError).code).toBe(code);
      expect((err as AttnkitError).op).toBe('blockSparseAttention');
      expect((err as AttnkitError).message).toContain(message);
    };
    const run = (m: BlockMask) => () => blockSparseAttention(r.dev.q, r.dev.k, r.dev.v, m);
    expectErr(run(BlockMask.causal(64, 96).to('cuda:0')), 'ERR_ATTNKIT_SHAPE', "expected 'mask' to cover Nq = 64 and Nk = 64 tokens, received Nq = 64, Nk = 96");
    expectErr(run(BlockMask.fromPredicate(() => true, { H: 3, Nq: 64, Nk: 64 }).to('cuda:0')), 'ERR_ATTNKIT_SHAPE', 'H = 1 or 2');
    if (cuda.deviceCount() > 1)
      expectErr(run(BlockMask.causal(64, 64).to('cuda:1')), 'ERR_ATTNKIT_DEVICE', "expected 'mask' to be on the device of 'q' (cuda:0), received cuda:1");
    const gone = BlockMask.causal(64, 64).to('cuda:0');
    gone.dispose();
    expectErr(run(gone), 'ERR_ATTNKIT_DISPOSED', "blockSparseAttention: 'mask' was disposed and cannot be used");
    const goneHost = BlockMask.causal(64, 64);
    goneHost.dispose();
    expectErr(run(goneHost), 'ERR_ATTNKIT_DISPOSED', "'mask' was disposed");
  });
  // The whole chain on the device (issue 13): select blocks from q and k, attend over the selection and
  // take its backward, all enqueued on one stream before anything is read back; then against the
  // float64 reference over the mask as read back and against the same chain on the CPU backend (the
  // inputs' float64 selection margins are clear, so both backends select the same blocks).
  for (const [name, select, refSelect, opts] of [
    ['mobaMask', mobaMask, referenceMobaSelect, { blockSize: 32, topK: 2 }],
    ['xattentionMask', xattentionMask, referenceXattentionSelect, { stride: 4, threshold: 0.9, blockSize: 32 }],
  ] as const)
    it(`${name} -> blockSparseAttention -> backward on cuda:0, no host round trip, same as the CPU chain`, async () => {
      const s = { B: 1, Nq: 150, Nk: 150, H: 2, Hkv: 1, D: 32, Dv: 32 };
      const r = await inputs(s, 'float16', name === 'mobaMask' ? 311 : 331);
      const sel = refSelect(r.vals.q, r.vals.k, s, opts as never);
      expect(Array.from(sel.margin).filter((m) => m > 0 && m < 1e-4), 'near ties in the inputs (pick another seed)').toEqual([]);
      const run = (q: Tensor, k: Tensor, v: Tensor, dO: Tensor) => {
        const m = (select as (q: Tensor, k: Tensor, o: never) => ReturnType<typeof mobaMask>)(q, k, opts as never);
        const a = blockSparseAttention(q, k, v, m.mask);
        return { m, a, g: a.backward(dO) };
      };
      const gpu = run(r.dev.q, r.dev.k, r.dev.v, r.dev.dO);
      expect(gpu.m.mask.device).toBe('cuda:0');
      for (const t of [gpu.a.out, gpu.a.lse, gpu.g.dq, gpu.g.dk, gpu.g.dv]) expect(keep(t).device).toBe('cuda:0');
      const cpu = run(r.host.q, r.host.k, r.host.v, r.host.dO);
      for (const t of [cpu.a.out, cpu.a.lse, cpu.g.dq, cpu.g.dk, cpu.g.dv, gpu.m.scores, gpu.m.selected, cpu.m.scores, cpu.m.selected]) keep(t);
      await gpu.m.mask.host();
      await cpu.m.mask.host();
      const dense = await gpu.m.mask.toDense();
      expect(Array.from(dense), 'the device selected the CPU blocks').toEqual(Array.from(await cpu.m.mask.toDense()));
      const p = { ...s, q: r.vals.q, k: r.vals.k, v: r.vals.v };
      const mk = { data: dense, B: gpu.m.mask.B, H: gpu.m.mask.H };
      const ref = referenceBlockSparse(p, mk);
      const rg = referenceBlockSparseBackward(p, mk, r.vals.dO);
      const allows = (i: number, j: number, b: number, h: number) => dense[(((b % mk.B) * mk.H + (h % mk.H)) * s.Nq + i) * s.Nk + j] === 1;
      const naive = naiveMasked(p, allows, 1 / Math.sqrt(s.D), 'float16', { dOut: r.vals.dO });
      const rows: [string, Tensor, Tensor, ArrayLike<number>, ArrayLike<number>, number][] = [
        ['out', gpu.a.out, cpu.a.out, ref.out, naive.out, 2],
        ['dq', gpu.g.dq, cpu.g.dq, rg.dq, naive.dq, 3],
        ['dk', gpu.g.dk, cpu.g.dk, rg.dk, naive.dk, 3],
        ['dv', gpu.g.dv, cpu.g.dv, rg.dv, naive.dv, 3],
      ];
      for (const [what, got, onCpu, want, nv, factor] of rows) {
        const g = await read64(got);
        const bound = factor * maxAbsErr(nv, want) + 1e-3 * Math.max(maxAbs(want), 1);
        expect(maxAbsErr(g, want), `${name} chain: ${what} vs float64`).toBeLessThanOrEqual(bound);
        expect(maxAbsErr(g, await read64(onCpu)), `${name} chain: ${what} vs the CPU chain`).toBeLessThanOrEqual(2 * bound);
      }
      await synchronize();
      gpu.m.mask.dispose();
      cpu.m.mask.dispose();
    });
});
