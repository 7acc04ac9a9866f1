/**
 * Backend conformance through the public API, driven by the backend table (native/ops/ops.cc).
 *
 * For every backend this process can reach (the CPU always; `cuda:0` when a device is present —
 * the fake-CUDA addon of test/cuda-fake-device.test.ts runs this file too, on the SIMT emulator),
 * every op the table says the backend has a kernel for (`native.opTable()`), and every dtype and
 * head dim of the grid that the table claims (`native.supports()` answers ""), one case runs the op
 * on that backend and compares it, forward and backward, with the float64 reference and (off the
 * CPU) with the CPU backend. The claims come from the table, not from this file: an op or a
 * combination a backend claims without a case here fails ("no conformance case"), so adding a
 * kernel row without a test cannot pass.
 *
 * Bounds: dense attention follows the naive-low-precision rule (2x, gradients 3x, the error of a
 * naive implementation in the same dtype, plus a floor of 1e-3 of the largest reference value);
 * the other families a per-dtype relative bound (their own suites hold each family's exact rule).
 */
import { afterAll, describe, expect, it } from 'vitest';
import {
  attention,
  BlockMask,
  blockSparseAttention,
  cuda,
  info,
  DTYPES,
  linearAttention,
  linearAttentionStep,
  mergeAttention,
  mobaMask,
  na1d,
  randn,
  reference,
  synchronize,
  tensor,
  xattentionMask,
  type FloatDType,
  type Tensor,
} from '../src/index.ts';
import { native } from '../src/native.ts';
import { maxAbs, maxAbsErr, naiveAttention, rounder, worst } from './helpers.ts';

type Device = 'cpu' | 'cuda:0';
const BACKENDS: { name: 'cpu' | 'cuda'; device: Device; ordinal: number }[] = [
  { name: 'cpu', device: 'cpu', ordinal: -1 },
  ...(cuda.available() ? [{ name: 'cuda' as const, device: 'cuda:0' as const, ordinal: 0 }] : []),
];
const DTYPE_GRID: FloatDType[] = ['float32', 'float16', 'bfloat16'];
// 40: a head dim that is not a power of two (the CPU backend takes any); and every head dim of the
// CUDA kernels this build has (info().cuda.kernels, from native/cuda/instantiations.json) (head dim 0: a kernel that takes any)
const HEAD_DIMS = [...new Set([32, 40, 64, 128, ...info().cuda.kernels.map((k) => k.headDim).filter((d) => d > 0)])].sort((a, b) => a - b);
const HEADLESS = new Set(['toArray', 'to', 'add', 'randn', 'sleep']);

const owned: Tensor[] = [];
const keep = <T extends Tensor>(t: T): T => (owned.push(t), t);
afterAll(async () => {
  await synchronize();
  owned.forEach((t) => t.dispose());
});

interface Check {
  name: string;
  got: ArrayLike<number>;
  want: ArrayLike<number>;
  /** the naive low-precision result (dense attention), for the 2x/3x rule */
  naive?: ArrayLike<number>;
  grad?: boolean;
  /** the CPU backend's result, compared off the CPU */
  cpu?: ArrayLike<number>;
}
type Case = (device: Device, dtype: FloatDType, D: number) => Promise<Check[]>;

const REL: Record<FloatDType, number> = { float32: 2e-4, float16: 6e-3, bfloat16: 5e-2 };

function expectClose(c: Check, dtype: FloatDType): void {
  const scale = Math.max(1, maxAbs(c.want));
  const bound = c.naive !== undefined
    ? (c.grad ? 3 : 2) * maxAbsErr(c.naive, c.want) + 1e-3 * maxAbs(c.want)
    : (c.grad ? 3 : 1) * REL[dtype] * scale;
  expect(maxAbsErr(c.got, c.want), `${c.name}: ${worst(c.got, c.want)} (bound ${bound.toExponential(2)})`).toBeLessThanOrEqual(bound);
  if (c.cpu) expect(maxAbsErr(c.got, c.cpu), `${c.name} vs the CPU backend`).toBeLessThanOrEqual(2 * bound);
}

const arr = async (t: Tensor) => Float64Array.from((await t.toArray()) as ArrayLike<number>);
/** Random inputs rounded to `dtype`, on `device`, with their float64 values. */
async function inputs(device: Device, dtype: FloatDType, shapes: number[][], seed: number) {
  const ts = shapes.map((s, i) => keep(randn(s, { seed: seed + i, dtype })));
  const vals = await Promise.all(ts.map(arr));
  const dev = device === 'cpu' ? ts : ts.map((t) => keep(t.to(device)));
  return { host: ts, dev, vals };
}

// ------------------------------------------------------------------ the cases, one per table row

const dense: Case = async (device, dtype, D) => {
  const p = { B: 1, Nq: 67, Nk: 75, H: 2, Hkv: 1, D, Dv: D };
  const opts = { causal: true };
  const { host, dev, vals } = await inputs(device, dtype, [[1, p.Nq, 2, D], [1, p.Nk, 1, D], [1, p.Nk, 1, D], [1, p.Nq, 2, D]], 11);
  const [q, k, v, dO] = dev as [Tensor, Tensor, Tensor, Tensor];
  const r = attention(q, k, v, opts);
  const g = r.backward(dO);
  const rp = { ...p, q: vals[0]!, k: vals[1]!, v: vals[2]! };
  const naive = naiveAttention(rp, opts, dtype, { dOut: vals[3]! });
  const ref = reference.referenceAttention(rp, opts);
  const rg = reference.referenceAttentionBackward(rp, vals[3]!, undefined, opts);
  let cpu: { out: Float64Array; dq: Float64Array; dk: Float64Array; dv: Float64Array } | undefined;
  if (device !== 'cpu') {
    const c = attention(host[0]!, host[1]!, host[2]!, opts);
    const cg = c.backward(host[3]!);
    cpu = { out: await arr(c.out), dq: await arr(cg.dq), dk: await arr(cg.dk), dv: await arr(cg.dv) };
  }
  return [
    { name: 'out', got: await arr(r.out), want: ref.out, naive: naive.out, cpu: cpu?.out },
    { name: 'dq', got: await arr(g.dq), want: rg.dq, naive: naive.dq!, grad: true, cpu: cpu?.dq },
    { name: 'dk', got: await arr(g.dk), want: rg.dk, naive: naive.dk!, grad: true, cpu: cpu?.dk },
    { name: 'dv', got: await arr(g.dv), want: rg.dv, naive: naive.dv!, grad: true, cpu: cpu?.dv },
  ];
};

const neighborhood: Case = async (device, dtype, D) => {
  const L = 37;
  const na = { size: [L], kernelSize: [5], stride: [2], dilation: [2], causal: [false] };
  const { dev, vals } = await inputs(device, dtype, [[2, L, 2, D], [2, L, 2, D], [2, L, 2, D], [2, L, 2, D]], 21);
  const [q, k, v, dO] = dev as [Tensor, Tensor, Tensor, Tensor];
  const r = na1d(q, k, v, { kernelSize: 5, stride: 2, dilation: 2 });
  const prob = { B: 2, H: 2, Hkv: 2, D, Dv: D, q: vals[0]!, k: vals[1]!, v: vals[2]! };
  const ref = reference.referenceNeighborhood(prob, na);
  const out = { name: 'out', got: await arr(r.out), want: ref.out };
  // a backend may run the forward at a head dim its backward lacks (CUDA: D = 128)
  const ordinal = device === 'cpu' ? -1 : 0;
  if (native.supports('neighborhoodBackward', ordinal, { dtype: DTYPES[dtype].code, B: 2, Nq: L, Nk: L, H: 2, Hkv: 2, D, Dv: D }) !== '') return [out];
  const g = r.backward(dO);
  const rg = reference.referenceNeighborhoodBackward(prob, na, vals[3]!);
  return [
    out,
    { name: 'dq', got: await arr(g.dq), want: rg.dq, grad: true },
    { name: 'dk', got: await arr(g.dk), want: rg.dk, grad: true },
    { name: 'dv', got: await arr(g.dv), want: rg.dv, grad: true },
  ];
};

const blockSparse: Case = async (device, dtype, D) => {
  const N = 77;
  const { dev, vals } = await inputs(device, dtype, [[1, N, 2, D], [1, N, 2, D], [1, N, 2, D], [1, N, 2, D]], 31);
  const [q, k, v, dO] = dev as [Tensor, Tensor, Tensor, Tensor];
  const host = BlockMask.slidingWindow(N, N, 20, 3, { blockQ: 16, blockK: 32 });
  const mask = device === 'cpu' ? host : host.to(device); // uploaded once, cached with the host mask
  const r = blockSparseAttention(q, k, v, mask);
  const p = { B: 1, Nq: N, Nk: N, H: 2, Hkv: 2, D, Dv: D, q: vals[0]!, k: vals[1]!, v: vals[2]! };
  const m = { data: await host.toDense(), B: 1, H: 1 };
  const ref = reference.referenceBlockSparse(p, m);
  const out = { name: 'out', got: await arr(r.out), want: ref.out };
  // a backend may run the forward at a head dim its backward lacks (CUDA: D = 128)
  const ordinal = device === 'cpu' ? -1 : 0;
  if (native.supports('blockSparseAttentionBackward', ordinal, { dtype: DTYPES[dtype].code, B: 1, Nq: N, Nk: N, H: 2, Hkv: 2, D, Dv: D }) !== '') return [out];
  const g = r.backward(dO);
  const rg = reference.referenceBlockSparseBackward(p, m, vals[3]!);
  return [
    out,
    { name: 'dq', got: await arr(g.dq), want: rg.dq, grad: true },
    { name: 'dk', got: await arr(g.dk), want: rg.dk, grad: true },
    { name: 'dv', got: await arr(g.dv), want: rg.dv, grad: true },
  ];
};

const merge: Case = async (device, dtype, D) => {
  const rows = 3 * 5 * 2;
  const { dev, vals } = await inputs(device, dtype, [[3, 5, 2, D], [3, 5, 2, D], [3, 5, 2, D]], 41);
  const lseHost = [keep(randn([3, 5, 2], { seed: 44 })), keep(randn([3, 5, 2], { seed: 45 }))];
  const lseVals = await Promise.all(lseHost.map(arr));
  const lses = device === 'cpu' ? lseHost : lseHost.map((t) => keep(t.to(device)));
  const parts = [{ out: dev[0]!, lse: lses[0]! }, { out: dev[1]!, lse: lses[1]! }];
  const r = mergeAttention(parts);
  const g = r.backward(dev[2]!);
  const rparts = [{ out: vals[0]!, lse: lseVals[0]! }, { out: vals[1]!, lse: lseVals[1]! }];
  const ref = reference.referenceMerge(rparts, rows, D);
  const rg = reference.referenceMergeBackward(rparts, rows, D, vals[2]!);
  return [
    { name: 'out', got: await arr(r.out), want: ref.out },
    { name: 'lse', got: await arr(r.lse), want: ref.lse },
    ...(await Promise.all(
      g.map(async (x, i) => [
        { name: `dOut[${i}]`, got: await arr(x.dout), want: rg[i]!.dout, grad: true },
        { name: `dLse[${i}]`, got: await arr(x.dlse), want: rg[i]!.dlse, grad: true },
      ]),
    )).flat(),
  ];
};

const linear: Case = async (device, dtype, D) => {
  const N = 70;
  const { dev, vals } = await inputs(device, dtype, [[1, N, 2, D], [1, N, 1, D], [1, N, 1, D], [1, N, 2, D]], 51);
  const [q, k, v, dO] = dev as [Tensor, Tensor, Tensor, Tensor];
  const opts = { decay: [0.97, 0.9], featureMap: 'elu1' as const, scale: 1 / D };
  const r = linearAttention(q, k, v, opts);
  const g = r.backward(dO);
  const p = { B: 1, N, H: 2, Hkv: 1, D, Dv: D, q: vals[0]!, k: vals[1]!, v: vals[2]! };
  const ref = reference.referenceLinearAttention(p, opts);
  const rg = reference.referenceLinearAttentionBackward(p, vals[3]!, undefined, opts);
  return [
    { name: 'out', got: await arr(r.out), want: ref.out },
    { name: 'dq', got: await arr(g.dq), want: rg.dq, grad: true },
    { name: 'dk', got: await arr(g.dk), want: rg.dk, grad: true },
    { name: 'dv', got: await arr(g.dv), want: rg.dv, grad: true },
  ];
};

const linearStep: Case = async (device, dtype, D) => {
  const { dev, vals } = await inputs(device, dtype, [[2, 1, 2, D], [2, 1, 2, D], [2, 1, 2, D]], 61);
  const stateHost = keep(randn([2, 2, D, D], { seed: 64 }));
  const state = device === 'cpu' ? stateHost : keep(stateHost.to(device));
  const opts = { decay: [0.5, 0.95], scale: 1 / D };
  const r = linearAttentionStep(dev[0]!, dev[1]!, dev[2]!, state, opts);
  const ref = reference.referenceLinearAttentionStep({ B: 2, H: 2, Hkv: 2, D, Dv: D, q: vals[0]!, k: vals[1]!, v: vals[2]! }, await arr(stateHost), opts);
  return [
    { name: 'out', got: await arr(r.out), want: ref.out },
    { name: 'state', got: await arr(r.state), want: ref.state },
  ];
};

const moba: Case = async (device, dtype, D) => {
  const dims = { B: 1, Nq: 150, Nk: 150, H: 2, Hkv: 1, D };
  const { dev, vals } = await inputs(device, dtype, [[1, 150, 2, D], [1, 150, 1, D]], 71);
  const opts = { blockSize: 32, topK: 2 };
  const r = mobaMask(dev[0]!, dev[1]!, opts);
  const scores = await arr(r.scores);
  const ref = reference.referenceMobaSelect(vals[0]!, vals[1]!, dims, opts);
  // the selection on the op's own scores is exact (ties to the lower block)
  const own = reference.referenceMobaSelect(vals[0]!, vals[1]!, dims, { ...opts, scores });
  return [
    { name: 'scores', got: scores, want: ref.scores },
    { name: 'selected (own scores)', got: await arr(r.selected), want: own.selected },
  ];
};

const xattention: Case = async (device, dtype, D) => {
  const dims = { B: 1, Nq: 130, Nk: 130, H: 2, Hkv: 2, D };
  const { dev, vals } = await inputs(device, dtype, [[1, 130, 2, D], [1, 130, 2, D]], 81);
  const opts = { stride: 4, threshold: 0.9, blockSize: 32 };
  const r = xattentionMask(dev[0]!, dev[1]!, opts);
  const scores = await arr(r.scores);
  const ref = reference.referenceXattentionSelect(vals[0]!, vals[1]!, dims, opts);
  const own = reference.referenceXattentionSelect(vals[0]!, vals[1]!, dims, { ...opts, scores });
  return [
    { name: 'scores', got: scores, want: ref.scores },
    { name: 'selected (own scores)', got: await arr(r.selected), want: own.selected },
  ];
};

// Tensor plumbing: toArray, to (conversion), add (gradient accumulation), randn, the sleep hook.
const readBack: Case = async (device, dtype) => {
  const data = Float64Array.from({ length: 999 }, (_, i) => Math.sin(i) * 3);
  const t = keep(tensor(data, [999], { dtype }));
  const d = device === 'cpu' ? t : keep(t.to(device));
  return [{ name: 'round trip', got: await arr(d), want: Array.from(data, rounder(dtype)) }];
};
const convert: Case = async (device, dtype) => {
  const data = Float64Array.from({ length: 1001 }, (_, i) => Math.cos(i) * 70000 ** ((i % 7) / 7));
  const t = keep(tensor(data, [1001], { dtype: 'float32' }));
  const d = device === 'cpu' ? t : keep(t.to(device));
  const f32 = Array.from(data, rounder('float32'));
  return [{ name: `float32 -> ${dtype}`, got: await arr(keep(d.to(dtype))), want: f32.map(rounder(dtype)) }];
};
const add: Case = async (device, dtype) => {
  const { dev, vals } = await inputs(device, dtype, [[513], [513]], 91);
  const out = keep(randn([513], { seed: 1, dtype, device }));
  const s = (dev[0]!.stream as { native: unknown }).native;
  native.add(s as never, dev[0]!._native('add', 'a'), dev[1]!._native('add', 'b'), out._native('add', 'out'));
  out._setStream(dev[0]!.stream);
  const r = rounder(dtype);
  return [{ name: 'a + b', got: await arr(out), want: vals[0]!.map((x, i) => r(r(x) + vals[1]![i]!)) }];
};
const randnCase: Case = async (device, dtype) => {
  const t = keep(randn([1 << 14], { seed: 7, dtype, device }));
  const x = await arr(t);
  const mean = x.reduce((a, b) => a + b, 0) / x.length;
  const std = Math.sqrt(x.reduce((a, b) => a + (b - mean) ** 2, 0) / x.length);
  return [{ name: 'mean and std of N(0, 1)', got: [mean, std], want: [0, 1], naive: [0.05, 1.05] }];
};
const sleep: Case = async (device) => {
  const t0 = Date.now();
  const s = keep(randn([1], { seed: 1, device })).stream;
  s.native.sleep(20);
  await s.synchronize();
  return [{ name: 'the stream waited', got: [Math.min(Date.now() - t0, 20)], want: [20], naive: [19] }];
};

/** Each row of the backend table and its case (forward and backward rows share one). */
const CASES: Record<string, Case> = {
  attention: dense,
  attentionBackward: dense,
  neighborhood,
  neighborhoodBackward: neighborhood,
  blockSparseAttention: blockSparse,
  blockSparseAttentionBackward: blockSparse,
  mergeAttention: merge,
  mergeAttentionBackward: merge,
  linearAttention: linear,
  linearAttentionBackward: linear,
  linearAttentionStep: linearStep,
  mobaMask: moba,
  xattentionMask: xattention,
  toArray: readBack,
  to: convert,
  add,
  randn: randnCase,
  sleep,
};

// ------------------------------------------------------------------ the claims, from the table

const TABLE = native.opTable();

describe.each(BACKENDS)('backend $name: every op and combination the backend table claims', ({ name, device, ordinal }) => {
  const rows = TABLE.filter((r) => r[name]);

  it('claims at least the dense attention forward and backward', () => {
    if (name === 'cpu' || info().cuda.attentionKernels) expect(rows.map((r) => r.op)).toEqual(expect.arrayContaining(['attention', 'attentionBackward']));
  });

  for (const row of rows) {
    const grid = DTYPE_GRID.flatMap((dtype) => (HEADLESS.has(row.op) ? [0] : HEAD_DIMS).map((D) => ({ dtype, D })));
    const claimed = grid.filter(
      ({ dtype, D }) => native.supports(row.op, ordinal, { dtype: DTYPES[dtype].code, B: 1, Nq: 64, Nk: 64, H: 2, Hkv: 1, D, Dv: D }) === '',
    );
    it(`${row.op}: the table's claims have a conformance case`, () => {
      expect(CASES[row.op], `no conformance case for ${row.op} on ${name}`).toBeDefined();
    });
    // Backward rows share the forward's case: run each case once per combination.
    if (row.op.endsWith('Backward') && TABLE.some((r) => r.op === row.op.slice(0, -'Backward'.length) && r[name])) continue;
    for (const { dtype, D } of claimed)
      it(`${row.op} ${dtype}${D ? ` D=${D}` : ''}`, { timeout: 300_000 }, async () => {
        const checks = await CASES[row.op]!(device, dtype, D);
        expect(checks.length).toBeGreaterThan(0);
        for (const c of checks) expectClose(c, dtype);
      });
  }
});

describe('the backend table', () => {
  it('lists every op once, each with a kernel somewhere', () => {
    const names = TABLE.map((r) => r.op);
    expect(new Set(names).size).toBe(names.length);
    for (const r of TABLE) expect(r.cpu || r.cuda, r.op).toBe(true);
  });

  it('refuses what a backend has no kernel for, naming the op, the inputs and where it runs', () => {
    const row = TABLE.find((r) => !r.cuda);
    if (!row) return;
    const why = native.supports(row.op, 0, { dtype: DTYPES.float32.code, D: 64, Dv: 64 });
    expect(why).toBe(`not implemented on CUDA yet (the inputs are on cuda:0; ${row.op} runs on: cpu); move them to the CPU with .to('cpu')`);
    expect(() => native.supports('noSuchOp', -1, { dtype: 0 })).toThrow(/unknown op 'noSuchOp'/);
  });
});
