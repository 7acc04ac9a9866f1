/**
 * The fuzz families (test/fuzz/run.mjs runs one per process): per public entry point, an arbitrary
 * of *valid* calls as plain data (tensor specs `{T: shape, dtype, seed}`, streams `{S}`, masks
 * `{Mask}`), the call, and a check of a successful result against the float64 reference
 * (`ak.reference`) on these small sizes. The runner mutates the valid calls into wrong ones.
 */

// --------------------------------------------------------------------------- shared helpers

const FLOATS = ['float32', 'float16', 'bfloat16'];
/** Relative tolerance of an op's output per dtype (outputs rounded to the dtype, f32 accumulation). */
const TOL = { float32: 2e-4, float16: 4e-3, bfloat16: 3e-2 };

const T = (shape, dtype = 'float32', seed = 1) => ({ T: shape, dtype, seed });

async function read64(t) {
  return Float64Array.from(await t.toArray());
}

/** The largest finite value of each output dtype: a larger true value overflows to ±Infinity. */
const MAX = { float16: 65504, bfloat16: 3.39e38, float32: 3.4e38 };

/**
 * got ≈ want, relative to the largest finite |want| (at least 1); non-finite values must match,
 * except that a value beyond the output dtype's range (`dtype`) may be ±Infinity.
 */
function expectClose(what, got, want, tol, dtype) {
  if (got.length !== want.length) throw new Error(`${what}: ${got.length} values, the reference has ${want.length}`);
  let scale = 1;
  for (const w of want) if (Number.isFinite(w)) scale = Math.max(scale, Math.abs(w));
  for (let i = 0; i < want.length; i++) {
    const g = got[i];
    const w = want[i];
    if (dtype !== undefined && Number.isFinite(w) && Math.abs(w) > 0.999 * MAX[dtype] && g === Math.sign(w) * Infinity) continue;
    if (!Number.isFinite(w) || !Number.isFinite(g)) {
      if (!(Object.is(g, w) || (Number.isNaN(g) && Number.isNaN(w)))) throw new Error(`${what}[${i}] = ${g}, the reference says ${w}`);
      continue;
    }
    if (Math.abs(g - w) > tol * scale) throw new Error(`${what}[${i}] = ${g}, the reference says ${w} (tolerance ${tol * scale})`);
  }
}

function expectShape(what, t, shape) {
  if (t.shape.length !== shape.length || t.shape.some((d, i) => d !== shape[i])) throw new Error(`${what}: shape [${t.shape}], expected [${shape}]`);
}

async function expectFinite(what, t) {
  const a = await t.toArray();
  for (let i = 0; i < a.length; i++) if (!Number.isFinite(a[i])) throw new Error(`${what}[${i}] = ${a[i]}`);
}

const entry = (call, base, verify) => ({ call, base, verify });
/** An entry whose first argument is the receiver of a method (`t.to(...)`, `a.and(b)`). */
const method = (call, base, verify) => ({ call, base, verify, receiver: true });

/** A family's arbitrary: one of its entry points, a valid call, and 0 to 3 mutations (none in a third of the cases). */
function familyArbitrary(entries) {
  return (fc, mutation) =>
    fc.oneof(
      ...Object.entries(entries).map(([fn, e]) =>
        fc.record({
          fn: fc.constant(fn),
          args: e.base(fc),
          muts: fc.oneof({ arbitrary: fc.constant([]), weight: 1 }, { arbitrary: fc.array(mutation, { minLength: 1, maxLength: 3 }), weight: 2 }),
        }),
      ),
    );
}

/** Sizes of a small sequence-attention problem, q [B, Nq, H, D], k [B, Nk, Hkv, D], v [B, Nk, Hkv, Dv]. */
const seqDims = (fc, { zero = true } = {}) =>
  fc.record({
    B: fc.integer({ min: 1, max: 2 }),
    Nq: fc.integer({ min: zero ? 0 : 1, max: 6 }),
    Nk: fc.integer({ min: zero ? 0 : 1, max: 6 }),
    group: fc.constantFrom(1, 2),
    Hkv: fc.integer({ min: 1, max: 2 }),
    D: fc.integer({ min: 1, max: 8 }),
    Dv: fc.integer({ min: 1, max: 8 }),
    dtype: fc.constantFrom(...FLOATS),
    seed: fc.nat(1000),
  });

const qkvOf = (d, Nk = d.Nk) => [
  T([d.B, d.Nq, d.Hkv * d.group, d.D], d.dtype, d.seed),
  T([d.B, Nk, d.Hkv, d.D], d.dtype, d.seed + 1),
  T([d.B, Nk, d.Hkv, d.Dv], d.dtype, d.seed + 2),
];

/** The float64 problem of q, k, v tensors (their exact values, read back). */
async function refProblem(q, k, v) {
  const [B, Nq, H, D] = q.shape;
  const [, Nk, Hkv] = k.shape;
  return { B, Nq, Nk, H, Hkv, D, Dv: v.shape[3], q: await read64(q), k: await read64(k), v: await read64(v) };
}

const maskOpts = (o) => ({ causal: o?.causal, window: o?.window, scale: o?.scale });

/**
 * A scale in the range the base cases draw from. A mutated scale far outside (2^32 is finite in
 * float32, so accepted) is only checked for a result of the right shape: the float32 LSE cannot
 * hold |scale * q.k| ~ 1e9 to the precision exp() needs: with scale 2^31 and a single key the dense
 * and block-sparse forwards give out = 0 instead of v, and the backwards ±Infinity gradients in
 * float16 (found by this fuzz; a numerical limit of the kernels, not a validation matter).
 */
const usualScale = (o) => o?.scale === undefined || (o.scale >= 0.05 && o.scale <= 2);

// --------------------------------------------------------------------------- families

const factories = {
  tensor: entry(
    (ak, data, shape, opts) => ak.tensor(data, shape, opts),
    (fc) =>
      fc.array(fc.double({ min: -4, max: 4, noNaN: true }), { maxLength: 8 }).chain((data) =>
        fc.tuple(fc.constant(data), fc.constantFrom([data.length], undefined), fc.record({ dtype: fc.constantFrom('float32', 'float16', 'bfloat16', 'int32', 'uint8') }, { requiredKeys: [] })),
      ),
    async (ak, [data, shape, opts], t) => {
      if (!Array.isArray(data)) return expectShape('tensor', t, shape ?? [data.length]);
      const dtype = opts?.dtype ?? 'float32';
      const got = await read64(t);
      const want = dtype === 'int32' ? Float64Array.from(Int32Array.from(data)) : dtype === 'uint8' ? Float64Array.from(Uint8Array.from(data)) : Float64Array.from(data);
      expectClose('tensor', got, want, dtype === 'float32' ? 1e-7 : dtype === 'float16' ? 1e-3 : dtype === 'bfloat16' ? 8e-3 : 0);
    },
  ),
  empty: entry(
    (ak, shape, opts) => ak.empty(shape, opts),
    (fc) => fc.tuple(fc.array(fc.integer({ min: 0, max: 4 }), { maxLength: 4 }), fc.record({ dtype: fc.constantFrom(...FLOATS, 'int32'), stream: fc.constant({ S: 'new' }) }, { requiredKeys: [] })),
    async (ak, [shape, opts], t) => {
      expectShape('empty', t, shape);
      if (t.dtype !== (opts?.dtype ?? 'float32')) throw new Error(`empty: dtype ${t.dtype}`);
    },
  ),
  zeros: entry(
    (ak, shape, opts) => ak.zeros(shape, opts),
    (fc) => fc.tuple(fc.array(fc.integer({ min: 0, max: 4 }), { maxLength: 4 }), fc.record({ dtype: fc.constantFrom(...FLOATS, 'int32', 'uint8'), device: fc.constant('cpu') }, { requiredKeys: [] })),
    async (ak, [shape], t) => {
      expectShape('zeros', t, shape);
      if ((await t.toArray()).some((x) => x !== 0)) throw new Error('zeros: a nonzero element');
    },
  ),
  randn: entry(
    (ak, shape, opts) => ak.randn(shape, opts),
    (fc) => fc.tuple(fc.array(fc.integer({ min: 0, max: 4 }), { maxLength: 4 }), fc.record({ seed: fc.nat(2 ** 32), dtype: fc.constantFrom(...FLOATS) }, { requiredKeys: ['seed'] })),
    async (ak, [shape, opts], t) => {
      expectShape('randn', t, shape);
      await expectFinite('randn', t);
      if (opts?.seed !== undefined) {
        const again = ak.randn(shape, opts);
        const [a, b] = [await t.toArray({ raw: true }), await again.toArray({ raw: true })];
        again.dispose();
        if (a.some((x, i) => x !== b[i])) throw new Error('randn: the same seed gave other numbers');
      }
    },
  ),
  fromDevicePointer: entry(
    (ak, ptr, shape, dtype, opts) => ak.fromDevicePointer(ptr, shape, dtype, opts),
    (fc) => fc.tuple(fc.constantFrom(4096n, 1n << 40n), fc.constant([4]), fc.constantFrom(...FLOATS), fc.record({ device: fc.constant('cuda:0') }, { requiredKeys: [] })),
    // Without CUDA this always throws ERR_ATTNKIT_DEVICE; with CUDA, a pointer it does not know, ERR_ATTNKIT_ARGUMENT.
    async () => {
      throw new Error('fromDevicePointer accepted a pointer that is not device memory');
    },
  ),
  memory: entry(
    (ak) => ak.memory(),
    (fc) => fc.constant([]),
    async (ak, args, m) => {
      if (typeof m.cpu !== 'number' || m.cpu < 0) throw new Error(`memory: cpu = ${m.cpu}`);
    },
  ),
};

const tensorMethods = {
  to: method(
    (ak, t, target, opts) => t.to(target, opts),
    (fc) => fc.tuple(fc.record({ T: fc.array(fc.integer({ min: 0, max: 4 }), { maxLength: 3 }), dtype: fc.constantFrom(...FLOATS, 'int32'), seed: fc.nat(99) }), fc.constantFrom(...FLOATS, 'int32', 'uint8', 'cpu'), fc.constant({})),
    async (ak, [t, target], out) => {
      expectShape('to', out, t.shape);
      if (target === 'cpu' || target === t.dtype) {
        if (out !== t) throw new Error('to: the same device and dtype must return the tensor itself');
        return;
      }
      const a = await read64(t);
      const b = await read64(out);
      const round = target === 'int32' ? (x) => Math.trunc(x) : target === 'uint8' ? null : (x) => x;
      if (round === null) return; // float to uint8 wraps, as a C cast: only the shape is checked
      expectClose('to', b, a.map(round), target === 'float16' ? 1e-3 : target === 'bfloat16' ? 8e-3 : target === 'int32' ? 0 : 1e-7);
    },
  ),
  reshape: method(
    (ak, t, shape) => t.reshape(shape),
    (fc) => fc.array(fc.integer({ min: 0, max: 4 }), { minLength: 1, maxLength: 3 }).chain((s) => fc.tuple(fc.constant(T(s, 'float32', 3)), fc.constantFrom([s.reduce((a, b) => a * b, 1)], [...s].reverse(), [1, ...s]))),
    async (ak, [t], out) => {
      const [a, b] = [await t.toArray(), await out.toArray()];
      if (a.length !== b.length || a.some((x, i) => !Object.is(x, b[i]))) throw new Error('reshape: the view holds other values');
    },
  ),
  toArray: method(
    (ak, t, opts) => t.toArray(opts),
    (fc) => fc.tuple(fc.record({ T: fc.array(fc.integer({ min: 0, max: 4 }), { maxLength: 3 }), dtype: fc.constantFrom(...FLOATS, 'int32', 'uint8'), seed: fc.nat(9) }), fc.record({ raw: fc.boolean() }, { requiredKeys: [] })),
    async (ak, [t], a) => {
      if (a.length !== t.size) throw new Error(`toArray: ${a.length} values for ${t.size} elements`);
    },
  ),
  disposeThenUse: method(
    (ak, t, op) => {
      t.dispose();
      t.dispose(); // idempotent
      return op === 'toArray' ? t.toArray() : op === 'reshape' ? t.reshape([t.size]) : op === 'to' ? t.to('float16') : ak.attention(t, t, t);
    },
    (fc) => fc.tuple(fc.constant(T([1, 2, 1, 4])), fc.constantFrom('toArray', 'reshape', 'to', 'attention')),
    async () => {
      throw new Error('a disposed tensor was used without ERR_ATTNKIT_DISPOSED');
    },
  ),
  devicePointer: method(
    (ak, t) => t.devicePointer,
    (fc) => fc.constant([T([2])]),
    async () => {
      throw new Error('devicePointer of a CPU tensor did not throw');
    },
  ),
};

const streams = {
  Stream: entry(
    (ak, device) => new ak.Stream(device),
    (fc) => fc.constantFrom(['cpu'], [undefined]),
    async (ak, args, s) => s.synchronize(),
  ),
  defaultStream: entry((ak, device) => ak.defaultStream(device), (fc) => fc.constant(['cpu'])),
  synchronize: entry((ak, device) => ak.synchronize(device), (fc) => fc.constant(['cpu'])),
  streamOption: entry(
    (ak, q, opts) => ak.attention(q, q, q, opts),
    (fc) => fc.tuple(fc.constant(T([1, 3, 1, 4])), fc.record({ stream: fc.constantFrom({ S: 'new' }, { S: 'default' }) })),
    async (ak, [q, opts], r) => {
      if (opts?.stream === undefined) return;
      if (r.out.stream !== opts.stream) throw new Error('attention: the output does not belong to the given stream');
      await opts.stream.synchronize();
    },
  ),
};

async function verifyAttention(ak, [q, k, v, opts], r) {
  if (!usualScale(opts)) return expectShape('attention out', r.out, [...q.shape.slice(0, 3), v.shape[3]]);
  const p = await refProblem(q, k, v);
  const want = ak.reference.referenceAttention(p, maskOpts(opts));
  expectClose('attention out', await read64(r.out), want.out, TOL[q.dtype], q.dtype);
  expectClose('attention lse', await read64(r.lse), want.lse, 1e-3);
}

async function verifyAttentionGrads(ak, [q, k, v, opts], g, dOut) {
  if (!usualScale(opts)) return [['dq', g.dq, q], ['dk', g.dk, k], ['dv', g.dv, v]].forEach(([n, t, r]) => expectShape(n, t, r.shape));
  const p = await refProblem(q, k, v);
  const want = ak.reference.referenceAttentionBackward(p, await read64(dOut), undefined, maskOpts(opts));
  const tol = 3 * TOL[q.dtype];
  expectClose('dq', await read64(g.dq), want.dq, tol);
  expectClose('dk', await read64(g.dk), want.dk, tol);
  expectClose('dv', await read64(g.dv), want.dv, tol);
}

const attnOpts = (fc) =>
  fc.record(
    { causal: fc.boolean(), window: fc.tuple(fc.integer({ min: -1, max: 4 }), fc.integer({ min: -1, max: 4 })), scale: fc.double({ min: 0.05, max: 2, noNaN: true }) },
    { requiredKeys: [] },
  );

const attention = {
  attention: entry((ak, q, k, v, o) => ak.attention(q, k, v, o), (fc) => fc.tuple(seqDims(fc), attnOpts(fc)).map(([d, o]) => [...qkvOf(d), o]), verifyAttention),
  attentionBackward: entry(
    (ak, q, k, v, dOut, o) => {
      const { out, lse } = ak.attention(q, k, v, o);
      return { g: ak.attentionBackward(q, k, v, out, lse, dOut, o), out, lse };
    },
    (fc) => fc.tuple(seqDims(fc, { zero: false }), attnOpts(fc)).map(([d, o]) => [...qkvOf(d), T([d.B, d.Nq, d.Hkv * d.group, d.Dv], d.dtype, d.seed + 3), o]),
    async (ak, [q, k, v, dOut, o], r) => verifyAttentionGrads(ak, [q, k, v, o], r.g, dOut),
  ),
  backwardClosure: entry(
    (ak, q, k, v, dOut, o) => {
      const f = ak.attention(q, k, v, o);
      return { g: f.backward(dOut), f };
    },
    (fc) => fc.tuple(seqDims(fc, { zero: false }), attnOpts(fc)).map(([d, o]) => [...qkvOf(d), T([d.B, d.Nq, d.Hkv * d.group, d.Dv], d.dtype, d.seed + 3), o]),
    async (ak, [q, k, v, dOut, o], r) => verifyAttentionGrads(ak, [q, k, v, o], r.g, dOut),
  ),
};

const partsOf = (fc) =>
  fc
    .record({ n: fc.integer({ min: 1, max: 3 }), rows: fc.array(fc.integer({ min: 1, max: 3 }), { minLength: 1, maxLength: 3 }), dv: fc.integer({ min: 1, max: 8 }), dtype: fc.constantFrom(...FLOATS), seed: fc.nat(99) })
    .map(({ n, rows, dv, dtype, seed }) => ({ parts: Array.from({ length: n }, (_, i) => ({ out: T([...rows, dv], dtype, seed + 2 * i), lse: T(rows, 'float32', seed + 2 * i + 1) })), rows, dv, dtype, seed }));

const merge = {
  mergeAttention: entry(
    (ak, parts, o) => ak.mergeAttention(parts, o),
    (fc) => fc.tuple(partsOf(fc), fc.record({ stream: fc.constant({ S: 'new' }) }, { requiredKeys: [] })).map(([p, o]) => [p.parts, o]),
    async (ak, [parts], m) => {
      const ref = await Promise.all(parts.map(async (p) => ({ out: await read64(p.out), lse: await read64(p.lse) })));
      const dv = parts[0].out.shape.at(-1);
      const want = ak.reference.referenceMerge(ref, parts[0].lse.size, dv);
      expectClose('merge out', await read64(m.out), want.out, TOL[parts[0].out.dtype], parts[0].out.dtype);
      expectClose('merge lse', await read64(m.lse), want.lse, 1e-4);
    },
  ),
  mergeAttentionBackward: entry(
    (ak, parts, dOut, o) => {
      const m = ak.mergeAttention(parts);
      return { g: ak.mergeAttentionBackward(parts, m.out, m.lse, dOut, o), m };
    },
    (fc) => fc.tuple(partsOf(fc), fc.constant({})).map(([p, o]) => [p.parts, T([...p.rows, p.dv], p.dtype, p.seed + 50), o]),
    async (ak, [parts, dOut], r) => {
      const ref = await Promise.all(parts.map(async (p) => ({ out: await read64(p.out), lse: await read64(p.lse) })));
      const want = ak.reference.referenceMergeBackward(ref, parts[0].lse.size, parts[0].out.shape.at(-1), await read64(dOut));
      for (let i = 0; i < parts.length; i++) {
        expectClose(`merge dout[${i}]`, await read64(r.g[i].dout), want[i].dout, 3 * TOL[parts[0].out.dtype], parts[0].out.dtype);
        expectClose(`merge dlse[${i}]`, await read64(r.g[i].dlse), want[i].dlse, 3 * TOL[parts[0].out.dtype], parts[0].out.dtype);
      }
    },
  ),
};

const linOpts = (fc, causalKey = true) =>
  fc.record(
    {
      ...(causalKey ? { causal: fc.boolean() } : {}),
      decay: fc.double({ min: 0.5, max: 1, noNaN: true }),
      scale: fc.double({ min: 0.1, max: 1, noNaN: true }),
      featureMap: fc.constantFrom('identity', 'elu1', 'relu'),
      normalize: fc.boolean(),
    },
    { requiredKeys: [] },
  );
const linDims = (fc) => seqDims(fc, { zero: false }).map((d) => ({ ...d, Nk: d.Nq }));

const refLinOpts = (o) => ({ causal: o?.causal, decay: o?.decay, scale: o?.scale, featureMap: o?.featureMap, normalize: o?.normalize });
const decayOk = (o) => o?.decay === undefined || o.decay === 1 || o.causal !== false;

const linear = {
  linearAttention: entry(
    (ak, q, k, v, o) => ak.linearAttention(q, k, v, o),
    (fc) => fc.tuple(linDims(fc), linOpts(fc)).filter(([, o]) => decayOk(o)).map(([d, o]) => [...qkvOf(d), o]),
    async (ak, [q, k, v, o], r) => {
      const p = await refProblem(q, k, v);
      const want = ak.reference.referenceLinearAttention({ ...p, N: p.Nq }, { ...refLinOpts(o), initialState: o?.initialState ? await read64(o.initialState) : undefined });
      expectClose('linear out', await read64(r.out), want.out, 4 * TOL[q.dtype], q.dtype);
    },
  ),
  linearAttentionBackward: entry(
    (ak, q, k, v, dOut, o) => ak.linearAttentionBackward(q, k, v, dOut, o),
    (fc) => fc.tuple(linDims(fc), linOpts(fc)).filter(([, o]) => decayOk(o)).map(([d, o]) => [...qkvOf(d), T([d.B, d.Nq, d.Hkv * d.group, d.Dv], d.dtype, d.seed + 3), o]),
    async (ak, [q, k, v, , o], g) => {
      // With the identity feature map the normalizer q.sum(k) can be ~0 (or negative): gradients
      // then overflow in float16, a property of the math, not of the validation.
      const nearZeroDenominator = o?.normalize === true && (o.featureMap ?? 'identity') === 'identity';
      for (const [name, t, ref] of [['dq', g.dq, q], ['dk', g.dk, k], ['dv', g.dv, v]]) {
        expectShape(name, t, ref.shape);
        if (!nearZeroDenominator && usualScale(o)) await expectFinite(name, t);
      }
    },
  ),
  linearAttentionStep: entry(
    (ak, q, k, v, state, o) => ak.linearAttentionStep(q, k, v, state, o),
    (fc) =>
      fc.tuple(linDims(fc), linOpts(fc, false)).map(([d, o]) => {
        const [q, k, v] = qkvOf({ ...d, Nq: 1 }, 1);
        return [q, k, v, null, o];
      }),
    async (ak, [q, k, v, state, o], r) => {
      const p = await refProblem(q, k, v);
      const want = ak.reference.referenceLinearAttentionStep(p, state ? await read64(state) : undefined, refLinOpts(o));
      expectClose('step out', await read64(r.out), want.out, 4 * TOL[q.dtype], q.dtype);
      expectClose('step state', await read64(r.state), want.state, 1e-4);
    },
  ),
};

/** A small neighborhood problem of rank 1 to 3 whose parameters satisfy NATTEN's rules. */
const naProblem = (fc, rank) =>
  fc
    .array(
      fc.record({ L: fc.integer({ min: 2, max: rank === 1 ? 12 : rank === 2 ? 6 : 4 }), k: fc.integer({ min: 2, max: 5 }), s: fc.integer({ min: 1, max: 3 }), d: fc.integer({ min: 1, max: 2 }), causal: fc.boolean() }),
      { minLength: rank, maxLength: rank },
    )
    .map((axes) =>
      axes.map(({ L, k, s, d, causal }) => {
        const kk = Math.max(2, Math.min(k, Math.floor(L / d)));
        const dd = kk * d <= L ? d : 1;
        return { L, k: kk, s: Math.min(s, kk), d: dd, causal };
      }),
    )
    .chain((axes) =>
      fc.record({
        axes: fc.constant(axes),
        B: fc.integer({ min: 1, max: 2 }),
        Hkv: fc.integer({ min: 1, max: 2 }),
        group: fc.constantFrom(1, 2),
        D: fc.integer({ min: 1, max: 8 }),
        Dv: fc.integer({ min: 1, max: 8 }),
        dtype: fc.constantFrom(...FLOATS),
        seed: fc.nat(999),
        perAxis: fc.boolean(),
      }),
    );

function naCall(p) {
  const sp = p.axes.map((a) => a.L);
  const H = p.Hkv * p.group;
  const one = (key) => (p.perAxis ? p.axes.map((a) => a[key]) : p.axes.every((a) => a[key] === p.axes[0][key]) ? p.axes[0][key] : p.axes.map((a) => a[key]));
  return [
    T([p.B, ...sp, H, p.D], p.dtype, p.seed),
    T([p.B, ...sp, p.Hkv, p.D], p.dtype, p.seed + 1),
    T([p.B, ...sp, p.Hkv, p.Dv], p.dtype, p.seed + 2),
    { kernelSize: one('k'), stride: one('s'), dilation: one('d'), causal: one('causal') },
  ];
}

const perAxis = (v, rank) => (Array.isArray(v) ? v : new Array(rank).fill(v));

async function verifyNa(ak, [q, k, v, o], r) {
  if (!usualScale(o)) return;
  const rank = q.shape.length - 3;
  const sp = q.shape.slice(1, 1 + rank);
  const params = { size: sp, kernelSize: perAxis(o.kernelSize, rank), stride: perAxis(o.stride ?? 1, rank), dilation: perAxis(o.dilation ?? 1, rank), causal: perAxis(o.causal ?? false, rank) };
  const prob = { B: q.shape[0], H: q.shape[rank + 1], Hkv: k.shape[rank + 1], D: q.shape[rank + 2], Dv: v.shape[rank + 2], q: await read64(q), k: await read64(k), v: await read64(v) };
  if (o.additionalKeys) Object.assign(prob, { addK: await read64(o.additionalKeys), addV: await read64(o.additionalValues) });
  const want = ak.reference.referenceNeighborhood(prob, params, o.scale);
  expectClose('na out', await read64(r.out), want.out, TOL[q.dtype], q.dtype);
  expectClose('na lse', await read64(r.lse), want.lse, 1e-3);
}

const naParams = (fc) =>
  fc.integer({ min: 1, max: 3 }).chain((rank) =>
    naProblem(fc, rank).map((p) => ({
      rank,
      size: p.axes.map((a) => a.L),
      kernel: p.axes.map((a) => a.k),
      stride: p.axes.map((a) => a.s),
      dilation: p.axes.map((a) => a.d),
      causal: p.axes.map((a) => a.causal),
      tile: rank === 1 ? [64] : rank === 2 ? [8, 8] : [4, 4, 4],
    })),
  );

const neighborhood = {
  na1d: entry((ak, q, k, v, o) => ak.na1d(q, k, v, o), (fc) => naProblem(fc, 1).map(naCall), verifyNa),
  na2d: entry((ak, q, k, v, o) => ak.na2d(q, k, v, o), (fc) => naProblem(fc, 2).map(naCall), verifyNa),
  na3d: entry((ak, q, k, v, o) => ak.na3d(q, k, v, o), (fc) => naProblem(fc, 3).map(naCall), verifyNa),
  na2dBackward: entry(
    (ak, q, k, v, dOut, o) => {
      const f = ak.na2d(q, k, v, o);
      return { g: ak.na2dBackward(q, k, v, f.out, f.lse, dOut, o), f };
    },
    (fc) =>
      naProblem(fc, 2).map((p) => {
        const [q, k, v, o] = naCall(p);
        return [q, k, v, T([...q.T.slice(0, -1), p.Dv], p.dtype, p.seed + 3), o];
      }),
    async (ak, [q, k, v], r) => {
      for (const [name, t, ref] of [['dq', r.g.dq, q], ['dk', r.g.dk, k], ['dv', r.g.dv, v]]) {
        expectShape(name, t, ref.shape);
        await expectFinite(name, t);
      }
    },
  ),
  neighborhoodPlan: entry(
    (ak, p) => ak.neighborhoodPlan(p),
    (fc) => naParams(fc).map((p) => [p]),
    async (ak, [p], plan) => {
      for (const key of ['densePairs', 'fullPairs', 'partialPairs', 'visible'])
        if (!Number.isInteger(plan[key]) || plan[key] < 0) throw new Error(`neighborhoodPlan: ${key} = ${plan[key]}`);
    },
  ),
  chooseTileShape: entry(
    (ak, p) => ak.chooseTileShape(p),
    (fc) => naParams(fc).map(({ tile, ...p }) => [p]),
    async (ak, [p], tile) => {
      if (tile.length !== p.rank || tile.reduce((a, b) => a * b, 1) !== 64) throw new Error(`chooseTileShape: [${tile}]`);
    },
  ),
};

const blocks = (fc) => fc.record({ blockQ: fc.constantFrom(16, 32, 64, 128), blockK: fc.constantFrom(16, 32, 64, 128) }, { requiredKeys: [] });

/** The mask's dense form equals `allows` everywhere. */
async function expectMask(ak, m, allows) {
  const d = await m.toDense();
  const { B, H, Nq, Nk } = m;
  for (let bh = 0; bh < B * H; bh++)
    for (let q = 0; q < Nq; q++)
      for (let k = 0; k < Nk; k++) {
        const want = allows(Math.floor(bh / H), bh % H, q, k) ? 1 : 0;
        if (d[(bh * Nq + q) * Nk + k] !== want) throw new Error(`mask (b,h ${bh}, q ${q}, k ${k}) = ${d[(bh * Nq + q) * Nk + k]}, expected ${want}`);
      }
}


const masks = {
  causal: entry(
    (ak, Nq, Nk, o) => ak.BlockMask.causal(Nq, Nk, o),
    (fc) => fc.tuple(fc.integer({ min: 0, max: 70 }), fc.integer({ min: 0, max: 70 }), blocks(fc)),
    async (ak, [Nq, Nk], m) => expectMask(ak, m, (b, h, q, k) => k <= q + Nk - Nq),
  ),
  slidingWindow: entry(
    (ak, Nq, Nk, l, r, o) => ak.BlockMask.slidingWindow(Nq, Nk, l, r, o),
    (fc) => fc.tuple(fc.integer({ min: 0, max: 70 }), fc.integer({ min: 0, max: 70 }), fc.integer({ min: -1, max: 40 }), fc.integer({ min: -1, max: 40 }), fc.record({ blockQ: fc.constantFrom(16, 32), causal: fc.boolean() }, { requiredKeys: [] })),
    async (ak, [Nq, Nk, l, r, o], m) =>
      expectMask(ak, m, (b, h, q, k) => ak.reference.attentionAllows(q, k, Nq, Nk, { causal: o?.causal ?? false, window: [l, r] })),
  ),
  documents: entry(
    (ak, lens, o) => ak.BlockMask.documents(lens, o),
    (fc) => fc.tuple(fc.array(fc.integer({ min: 0, max: 30 }), { maxLength: 5 }), fc.record({ blockK: fc.constantFrom(16, 32), causal: fc.boolean() }, { requiredKeys: [] })),
    async (ak, [lens, o], m) => {
      const doc = lens.flatMap((l, i) => new Array(l).fill(i));
      await expectMask(ak, m, (b, h, q, k) => doc[q] === doc[k] && (!o?.causal || k <= q));
    },
  ),
  neighborhood: entry(
    (ak, p, o) => ak.BlockMask.neighborhood(p, o),
    (fc) =>
      fc.tuple(
        fc.integer({ min: 1, max: 3 }).chain((rank) => naProblem(fc, rank)).map((p) => ({ size: p.axes.map((a) => a.L), ...naCall(p)[3] })),
        blocks(fc),
      ),
    async (ak, [p], m) => {
      const R = p.size.length;
      const params = { size: p.size, kernelSize: perAxis(p.kernelSize, R), stride: perAxis(p.stride ?? 1, R), dilation: perAxis(p.dilation ?? 1, R), causal: perAxis(p.causal ?? false, R) };
      const want = ak.reference.neighborhoodMatrix(params);
      const N = m.Nq;
      await expectMask(ak, m, (b, h, q, k) => want[q * N + k] === 1);
    },
  ),
  fromBlocks: entry(
    (ak, bl, shape, o) => ak.BlockMask.fromBlocks(bl, shape, o),
    (fc) =>
      fc.record({ Nq: fc.integer({ min: 0, max: 70 }), Nk: fc.integer({ min: 0, max: 70 }), B: fc.integer({ min: 1, max: 2 }), bits: fc.array(fc.boolean(), { minLength: 64, maxLength: 64 }) }).map(({ Nq, Nk, B, bits }) => {
        const Qb = Math.ceil(Nq / 32);
        const Kb = Math.ceil(Nk / 32);
        return [bits.slice(0, B * Qb * Kb).map((x) => (x ? 1 : 0)), [B, 1, Qb, Kb], { Nq, Nk, blockQ: 32, blockK: 32 }];
      }),
    async (ak, [bl, [, , Qb, Kb]], m) => expectMask(ak, m, (b, h, q, k) => Boolean(bl[(b * Qb + Math.floor(q / 32)) * Kb + Math.floor(k / 32)])),
  ),
  fromPredicate: entry(
    (ak, fn, o) => ak.BlockMask.fromPredicate(fn, o),
    (fc) => fc.tuple(fc.integer({ min: 1, max: 4 }).map((mod) => ({ Pred: mod })), fc.record({ B: fc.integer({ min: 1, max: 2 }), H: fc.integer({ min: 1, max: 2 }), Nq: fc.integer({ min: 0, max: 40 }), Nk: fc.integer({ min: 0, max: 40 }), blockQ: fc.constant(16) }, { requiredKeys: ['Nq', 'Nk'] })),
    async (ak, [fn], m) => expectMask(ak, m, fn),
  ),
  fromData: entry(
    (ak, g, d) => ak.BlockMask.fromData(g, d),
    (fc) =>
      fc.record({ Nq: fc.integer({ min: 1, max: 40 }), Nk: fc.integer({ min: 1, max: 40 }) }).map(({ Nq, Nk }) => {
        const rows = Math.ceil(Nq / 16);
        const i32 = (a) => ({ I32: a });
        return [
          { B: 1, H: 1, Nq, Nk, blockQ: 16, blockK: 16 },
          { fullOffsets: i32(Array.from({ length: rows + 1 }, (_, r) => r)), fullIndices: i32(new Array(rows).fill(0)), partialOffsets: i32(new Array(rows + 1).fill(0)), partialIndices: i32([]), partialBits: { U32: [] } },
        ];
      }),
    async (ak, args, m) => expectMask(ak, m, (b, h, q, k) => k < 16),
  ),
  and: method(
    (ak, a, b) => a.and(b),
    (fc) => fc.integer({ min: 1, max: 50 }).map((N) => [{ Mask: 'causal', Nq: N, Nk: N, bq: 16, bk: 16 }, { Mask: 'window', Nq: N, Nk: N, bq: 16, bk: 16, w: 5 }]),
    async (ak, [a], m) => expectMask(ak, m, (b, h, q, k) => k <= q && k >= q - 5),
  ),
  or: method(
    (ak, a, b) => a.or(b),
    (fc) => fc.integer({ min: 1, max: 50 }).map((N) => [{ Mask: 'window', Nq: N, Nk: N, bq: 16, bk: 16, w: 3 }, { Mask: 'pred', Nq: N, Nk: N, bq: 16, bk: 16 }]),
    async (ak, [a], m) => expectMask(ak, m, (b, h, q, k) => (k <= q && k >= q - 3) || (q * 3 + k) % 4 !== 0),
  ),
};

const bsProblem = (fc) =>
  fc.tuple(seqDims(fc, { zero: false }), fc.constantFrom('causal', 'window', 'pred'), fc.double({ min: 0.1, max: 1, noNaN: true })).map(([d, kind, scale]) => [
    ...qkvOf(d),
    { Mask: kind, Nq: d.Nq, Nk: d.Nk, bq: 16, bk: 16, w: 2 },
    { scale },
  ]);

const blockSparse = {
  blockSparseAttention: entry(
    (ak, q, k, v, m, o) => ak.blockSparseAttention(q, k, v, m, o),
    bsProblem,
    async (ak, [q, k, v, m, o], r) => {
      if (!usualScale(o)) return;
      const p = await refProblem(q, k, v);
      const want = ak.reference.referenceBlockSparse(p, { data: await m.toDense(), B: m.B, H: m.H }, o?.scale);
      expectClose('block-sparse out', await read64(r.out), want.out, TOL[q.dtype], q.dtype);
      expectClose('block-sparse lse', await read64(r.lse), want.lse, 1e-3);
    },
  ),
  blockSparseAttentionBackward: entry(
    (ak, q, k, v, m, o) => {
      const f = ak.blockSparseAttention(q, k, v, m, o);
      return { g: ak.blockSparseAttentionBackward(q, k, v, m, f.out, f.lse, f.out, o), f };
    },
    bsProblem,
    async (ak, [q, k, v, , o], r) => {
      for (const [name, t, ref] of [['dq', r.g.dq, q], ['dk', r.g.dk, k], ['dv', r.g.dv, v]]) {
        expectShape(name, t, ref.shape);
        if (usualScale(o)) await expectFinite(name, t);
      }
    },
  ),
  mobaMask: entry(
    (ak, q, k, o) => ak.mobaMask(q, k, o),
    (fc) =>
      fc.tuple(seqDims(fc, { zero: false }), fc.constantFrom(16, 32), fc.integer({ min: 1, max: 4 }), fc.boolean()).map(([d, blockSize, topK, causal]) => {
        const [q, k] = qkvOf({ ...d, Nq: d.Nq * 5, Nk: d.Nk * 5 });
        return [q, k, { blockSize, topK, causal }];
      }),
    async (ak, [q, k, o], r) => {
      const [B, Nq, H] = q.shape;
      const want = ak.reference.mobaVisibility(await r.selected.toArray(), { B, Nq, Nk: k.shape[1], H }, o);
      const got = await r.mask.toDense();
      if (got.length !== want.length || got.some((x, i) => x !== want[i])) throw new Error('mobaMask: the mask differs from the visibility of its own selection');
    },
  ),
  xattentionMask: entry(
    (ak, q, k, o) => ak.xattentionMask(q, k, o),
    (fc) =>
      fc.tuple(seqDims(fc, { zero: false }), fc.constantFrom(1, 2, 4, 8), fc.double({ min: 0, max: 1, noNaN: true }), fc.boolean()).map(([d, stride, threshold, causal]) => {
        const [q, k] = qkvOf({ ...d, Nq: d.Nq * 5, Nk: d.Nk * 5 });
        return [q, k, { stride, threshold, causal, blockSize: 16 }];
      }),
    async (ak, [q, k], r) => {
      const d = await r.mask.toDense();
      if (d.length !== q.shape[0] * q.shape[2] * q.shape[1] * k.shape[1]) throw new Error(`xattentionMask: dense mask of ${d.length} entries`);
    },
  ),
};

const info = {
  setIsa: entry(
    (ak, level) => {
      const before = ak.cpu.isa();
      try {
        return ak.cpu.setIsa(level);
      } finally {
        ak.cpu.setIsa(before);
      }
    },
    (fc) => fc.constantFrom(['generic'], ['avx2'], ['amx']),
    async (ak, args, ok) => {
      if (typeof ok !== 'boolean') throw new Error(`setIsa returned ${ok}`);
    },
  ),
  info: entry((ak) => ak.info(), (fc) => fc.constant([])),
  cudaAvailable: entry((ak) => ak.cuda.available(), (fc) => fc.constant([])),
};

// --------------------------------------------------------------------------- the documented domains

/*
 * Per entry point, the documented rules its arguments must satisfy, as `invalid(ak, ...args)`: a
 * reason when a rule is broken, else null. A call that breaks one and still succeeds is a failure
 * (the validation it needs is missing), even when the result happens to agree with the reference.
 * Only clear rules are listed here; a refused call that follows them all is not checked.
 */
const isInt = (x, min = -Infinity) => typeof x === 'number' && Number.isInteger(x) && x >= min && x < 2 ** 31;
const isBool = (x) => typeof x === 'boolean';
const isScale = (x) => typeof x === 'number' && Number.isFinite(x) && x > 0 && Number.isFinite(Math.fround(x)) && Math.fround(x) > 0;
const isBlock = (x) => [16, 32, 64, 128].includes(x);
const isPow2 = (x, lo, hi) => isInt(x, lo) && x <= hi && (x & (x - 1)) === 0;
const axesOf = (pred, rank) => (x) => (Array.isArray(x) ? x.length === rank && x.every(pred) : pred(x));
const listOf = (pred, rank) => (x) => Array.isArray(x) && x.length === rank && x.every(pred);

function badOptions(o, spec, required = []) {
  if (o === undefined) return required.length > 0 ? 'no options' : null;
  if (o === null || typeof o !== 'object' || Array.isArray(o)) return `options ${o === null ? 'null' : typeof o}`;
  for (const [k, v] of Object.entries(o)) {
    if (!(k in spec)) return `unknown option '${k}'`;
    if (v !== undefined && !spec[k](v)) return `option '${k}' = ${typeof v === 'bigint' ? `${v}n` : String(v)}`;
  }
  for (const k of required) if (o[k] === undefined) return `option '${k}' missing`;
  return null;
}

/** NATTEN's rules over per-axis lists (k >= kMin, s <= k, k * d <= L, fewer than 2^31 tokens). */
function badGrid(size, k, s, d, kMin) {
  let n = 1;
  for (let a = 0; a < size.length; a++) {
    if (k[a] < kMin) return `kernel ${k[a]} < ${kMin} on axis ${a}`;
    if (s[a] > k[a]) return `stride ${s[a]} > kernel ${k[a]} on axis ${a}`;
    if (k[a] * d[a] > size[a]) return `kernel ${k[a]} x dilation ${d[a]} > size ${size[a]} on axis ${a}`;
    n *= size[a];
  }
  return n >= 2 ** 31 ? 'too many tokens' : null;
}

const DOMAINS = {
  factories: {
    tensor: (ak, data, shape, o) =>
      badOptions(o, { dtype: (x) => DTYPE_NAMES.includes(x), device: (x) => x === 'cpu' }) ??
      (Array.isArray(data) && data.some((x) => typeof x !== 'number') ? 'data holds a non-number' : null) ??
      (shape !== undefined && !(Array.isArray(shape) && shape.every((x) => isInt(x, 0)) && shape.reduce((a, b) => a * b, 1) === data.length) ? 'shape' : null),
    empty: (ak, shape, o) => (Array.isArray(shape) && shape.every((x) => isInt(x, 0) || Number.isSafeInteger(x)) ? null : 'shape') ?? badOptions(o, { dtype: (x) => DTYPE_NAMES.includes(x), device: (x) => x === 'cpu', stream: (x) => x instanceof ak.Stream }),
    zeros: (ak, shape, o) => (Array.isArray(shape) && shape.every((x) => Number.isSafeInteger(x) && x >= 0) ? null : 'shape') ?? badOptions(o, { dtype: (x) => DTYPE_NAMES.includes(x), device: (x) => x === 'cpu', stream: (x) => x instanceof ak.Stream }),
    randn: (ak, shape, o) =>
      (Array.isArray(shape) && shape.every((x) => Number.isSafeInteger(x) && x >= 0) ? null : 'shape') ??
      badOptions(o, { seed: (x) => Number.isSafeInteger(x) && x >= 0, dtype: (x) => FLOATS.includes(x), device: (x) => x === 'cpu', stream: (x) => x instanceof ak.Stream }),
  },
  tensorMethods: {
    reshape: (ak, t, shape) => (Array.isArray(shape) && shape.every((x) => Number.isSafeInteger(x) && x >= 0) && shape.reduce((a, b) => a * b, 1) === t.size ? null : `shape [${shape}] for ${t.size} elements`),
    to: (ak, t, target, o) => ([...DTYPE_NAMES, 'cpu'].includes(target) ? null : `target ${String(target)}`) ?? badOptions(o, { stream: (x) => x instanceof ak.Stream }),
    toArray: (ak, t, o) => badOptions(o, { raw: isBool }),
  },
  attention: Object.fromEntries(
    ['attention', 'attentionBackward', 'backwardClosure'].map((fn) => [
      fn,
      (ak, ...args) =>
        badOptions(args.at(-1), {
          causal: isBool,
          window: (w) => Array.isArray(w) && w.length === 2 && w.every((x) => isInt(x, -1)),
          scale: isScale,
          stream: (x) => x instanceof ak.Stream,
        }),
    ]),
  ),
  merge: {
    mergeAttention: (ak, parts, o) => badOptions(o, { stream: (x) => x instanceof ak.Stream }),
    mergeAttentionBackward: (ak, parts, dOut, o) => badOptions(o, { stream: (x) => x instanceof ak.Stream, dLse: (x) => x instanceof ak.Tensor }),
  },
  linear: (() => {
    const spec = (ak) => ({
      causal: isBool,
      decay: (d) => (typeof d === 'number' ? d > 0 && d <= 1 : Array.isArray(d) || d instanceof Float32Array || d instanceof Float64Array),
      scale: isScale,
      featureMap: (f) => ak.LINEAR_FEATURE_MAPS.includes(f),
      normalize: isBool,
      initialState: (x) => x instanceof ak.Tensor,
      returnFinalState: isBool,
      stream: (x) => x instanceof ak.Stream,
    });
    const step = (ak) => {
      const { causal, initialState, returnFinalState, ...rest } = spec(ak);
      return rest;
    };
    return {
      linearAttention: (ak, q, k, v, o) => badOptions(o, spec(ak)),
      linearAttentionBackward: (ak, q, k, v, dOut, o) => badOptions(o, { ...spec(ak), dFinalState: (x) => x instanceof ak.Tensor }),
      linearAttentionStep: (ak, q, k, v, state, o) => badOptions(o, step(ak)),
    };
  })(),
  neighborhood: (() => {
    const na = (ak, q, o) => {
      if (!(q instanceof ak.Tensor)) return 'q is not a tensor';
      const R = q.shape.length - 3;
      const bad = badOptions(
        o,
        {
          kernelSize: axesOf((x) => isInt(x, 2), R),
          stride: axesOf((x) => isInt(x, 1), R),
          dilation: axesOf((x) => isInt(x, 1), R),
          causal: axesOf(isBool, R),
          scale: isScale,
          tileShape: (t) => listOf((x) => isInt(x, 1), R)(t) && t.reduce((a, b) => a * b, 1) === 64,
          additionalKeys: (x) => x instanceof ak.Tensor,
          additionalValues: (x) => x instanceof ak.Tensor,
          stream: (x) => x instanceof ak.Stream,
        },
        ['kernelSize'],
      );
      if (bad) return bad;
      const all = (x, d) => (x === undefined ? new Array(R).fill(d) : Array.isArray(x) ? x : new Array(R).fill(x));
      return badGrid(q.shape.slice(1, 1 + R), all(o.kernelSize), all(o.stride, 1), all(o.dilation, 1), 2);
    };
    const plan = (withTile) => (ak, p) => {
      const bad = badOptions(p, { rank: (r) => [1, 2, 3].includes(r), size: () => true, kernel: () => true, stride: () => true, dilation: () => true, causal: () => true, ...(withTile ? { tile: () => true } : {}) }, ['rank', 'size', 'kernel', 'stride', 'dilation', 'causal', ...(withTile ? ['tile'] : [])]);
      if (bad) return bad;
      for (const key of ['size', 'kernel', 'stride', 'dilation', ...(withTile ? ['tile'] : [])]) if (!listOf((x) => isInt(x, 1), p.rank)(p[key])) return `${key}`;
      if (!listOf(isBool, p.rank)(p.causal)) return 'causal';
      if (withTile && p.tile.reduce((a, b) => a * b, 1) !== 64) return 'tile';
      return badGrid(p.size, p.kernel, p.stride, p.dilation, 1);
    };
    return {
      na1d: (ak, q, k, v, o) => na(ak, q, o),
      na2d: (ak, q, k, v, o) => na(ak, q, o),
      na3d: (ak, q, k, v, o) => na(ak, q, o),
      na2dBackward: (ak, q, k, v, dOut, o) => na(ak, q, o),
      neighborhoodPlan: plan(true),
      chooseTileShape: plan(false),
    };
  })(),
  masks: {
    causal: (ak, Nq, Nk, o) => (isInt(Nq, 0) && isInt(Nk, 0) ? null : 'Nq/Nk') ?? badOptions(o, { blockQ: isBlock, blockK: isBlock }),
    slidingWindow: (ak, Nq, Nk, l, r, o) => (isInt(Nq, 0) && isInt(Nk, 0) && isInt(l, -1) && isInt(r, -1) ? null : 'Nq/Nk/left/right') ?? badOptions(o, { blockQ: isBlock, blockK: isBlock, causal: isBool }),
    documents: (ak, lens, o) => (Array.isArray(lens) && lens.every((x) => isInt(x, 0)) ? null : 'seqLens') ?? badOptions(o, { blockQ: isBlock, blockK: isBlock, causal: isBool }),
    neighborhood: (ak, p, o) => {
      const R = Array.isArray(p?.size) ? p.size.length : 0;
      if (R < 1 || R > 3 || !p.size.every((x) => isInt(x, 1))) return 'size';
      const bad = badOptions(p, { size: () => true, kernelSize: axesOf((x) => isInt(x, 1), R), stride: axesOf((x) => isInt(x, 1), R), dilation: axesOf((x) => isInt(x, 1), R), causal: axesOf(isBool, R) }, ['kernelSize']) ?? badOptions(o, { blockQ: isBlock, blockK: isBlock });
      if (bad) return bad;
      const all = (x, d) => (x === undefined ? new Array(R).fill(d) : Array.isArray(x) ? x : new Array(R).fill(x));
      return badGrid(p.size, all(p.kernelSize), all(p.stride, 1), all(p.dilation, 1), 1);
    },
    fromBlocks: (ak, bl, shape, o) => badOptions(o, { Nq: (x) => isInt(x, 0), Nk: (x) => isInt(x, 0), blockQ: isBlock, blockK: isBlock }, ['Nq', 'Nk']),
    fromPredicate: (ak, fn, o) =>
      (typeof fn === 'function' ? null : 'fn') ?? badOptions(o, { B: (x) => isInt(x, 1), H: (x) => isInt(x, 1), Nq: (x) => isInt(x, 0), Nk: (x) => isInt(x, 0), onProgress: (x) => typeof x === 'function', blockQ: isBlock, blockK: isBlock }, ['Nq', 'Nk']),
    and: (ak, a, b) => (b instanceof ak.BlockMask ? null : 'other'),
    or: (ak, a, b) => (b instanceof ak.BlockMask ? null : 'other'),
  },
  blockSparse: {
    blockSparseAttention: (ak, q, k, v, m, o) => (m instanceof ak.BlockMask ? null : 'mask') ?? badOptions(o, { scale: isScale, stream: (x) => x instanceof ak.Stream }),
    blockSparseAttentionBackward: (ak, q, k, v, m, o) => (m instanceof ak.BlockMask ? null : 'mask') ?? badOptions(o, { scale: isScale, stream: (x) => x instanceof ak.Stream, dLse: (x) => x instanceof ak.Tensor }),
    mobaMask: (ak, q, k, o) => badOptions(o, { blockSize: (x) => isPow2(x, 16, 2 ** 30), topK: (x) => isInt(x, 1), causal: isBool, blockQ: isBlock, stream: (x) => x instanceof ak.Stream }, ['blockSize', 'topK']),
    xattentionMask: (ak, q, k, o) =>
      badOptions(o, { stride: (x) => isPow2(x, 1, 128), threshold: (x) => typeof x === 'number' && x >= 0 && x <= 1, blockSize: isBlock, causal: isBool, stream: (x) => x instanceof ak.Stream }, ['stride', 'threshold']) ??
      ((o.blockSize ?? 64) % o.stride === 0 ? null : 'stride does not divide the block size'),
  },
  info: {
    setIsa: (ak, level) => (ak.cpu.levels.includes(level) ? null : `level ${String(level)}`),
  },
};

const DTYPE_NAMES = ['float32', 'float16', 'bfloat16', 'int32', 'uint8'];

const defs = { factories, tensorMethods, streams, attention, merge, linear, neighborhood, masks, blockSparse, info };
for (const [family, entries] of Object.entries(DOMAINS)) for (const [fn, invalid] of Object.entries(entries)) defs[family][fn].invalid = invalid;

/** name -> {entries, arbitrary(fc, mutation)}. */
export const FAMILIES = Object.fromEntries(Object.entries(defs).map(([name, entries]) => [name, { entries, arbitrary: familyArbitrary(entries) }]));
