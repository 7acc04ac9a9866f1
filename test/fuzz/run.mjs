/**
 * One fuzz family in a process of its own (spawned by test/fuzz/fuzz.test.ts, so that an abort is
 * a failure, not a lost run): `node test/fuzz/run.mjs <family> <numRuns> <seed> <codes>`. Loads the
 * compiled package (dist/) and runs fast-check over the family's entry points. Each case is a valid
 * call with up to three mutations (a wrong value, a missing or unknown option, a wrong dtype, rank
 * or extent, a disposed tensor) and must either throw an AttnkitError with a documented code (its
 * message starting with its op) and leave every input unchanged, or succeed and agree with the
 * float64 reference. Prints one JSON line: {family, cases, seed, ok, failure?, outcomes}. With
 * ATTNKIT_FUZZ_TRACE=1 each case is written to stderr before it runs: the last one names the case
 * that killed a child (an abort or an out-of-memory kill leaves no report).
 */
import fc from 'fast-check';
import { FAMILIES } from './families.mjs';

const [family, runsArg, seedArg, codesArg] = process.argv.slice(2);
const ak = await import(new URL('../../dist/src/index.js', import.meta.url).href);
const fam = FAMILIES[family];
if (!fam) throw new Error(`unknown fuzz family '${family}' (known: ${Object.keys(FAMILIES).join(', ')})`);
const numRuns = Number(runsArg);
const seed = Number(seedArg);
const documented = new Set(codesArg.split(','));

// ---------------------------------------------------------------------------------------------
// Inputs as plain data (so that fast-check can print and shrink them), made into tensors per case.

/** Makes the tensors, streams and masks a case names; `made` collects the tensors. */
function materialize(v, made) {
  if (Array.isArray(v)) return v.map((x) => materialize(x, made));
  if (v === null || typeof v !== 'object') return v;
  if ('T' in v) {
    const { T: shape, dtype, seed: s, disposed } = v;
    let t;
    if (dtype === 'int32' || dtype === 'uint8') {
      const n = shape.reduce((a, b) => a * b, 1);
      t = ak.tensor(Array.from({ length: n }, (_, i) => (i * 7 + s) % 5), shape, { dtype });
    } else t = ak.randn(shape, { seed: s, dtype });
    made.push(t);
    if (disposed) t.dispose();
    return t;
  }
  if ('I32' in v) return Int32Array.from(v.I32);
  if ('U32' in v) return Uint32Array.from(v.U32);
  if ('Pred' in v) return (b, h, q, k) => (q + 2 * k + b + h) % v.Pred === 0;
  if ('S' in v) return v.S === 'default' ? ak.defaultStream('cpu') : new ak.Stream('cpu');
  if ('Mask' in v) {
    const { Mask: kind, Nq, Nk, bq, bk, w } = v;
    if (kind === 'causal') return ak.BlockMask.causal(Nq, Nk, { blockQ: bq, blockK: bk });
    if (kind === 'window') return ak.BlockMask.slidingWindow(Nq, Nk, w, 0, { blockQ: bq, blockK: bk });
    return ak.BlockMask.fromPredicate((b, h, q, k) => (q * 3 + k) % 4 !== 0, { Nq, Nk, blockQ: bq, blockK: bk });
  }
  const out = {};
  for (const [k, x] of Object.entries(v)) out[k] = materialize(x, made);
  return out;
}

const DTYPES = ['float32', 'float16', 'bfloat16', 'int32', 'uint8'];
const isSpec = (v) => v !== null && typeof v === 'object' && ['T', 'S', 'Mask', 'Pred', 'I32', 'U32'].some((k) => k in v);

/**
 * A value next to `v`, just outside (or inside) its valid range: a number one more, one less,
 * doubled, a half off, negated, beyond 2^31, NaN; a boolean as a string or a number; one entry of an
 * array or one key of an object perturbed. This finds a missing bound far more often than a random
 * value does.
 */
function perturb(v, n) {
  if (typeof v === 'number') return [v + 1, v - 1, v * 2, v + 0.5, -2 - v, v + 2 ** 31, NaN, -v, 0, v * 1e40][n % 10];
  if (typeof v === 'boolean') return ['true', 1, 0, null, String(!v)][n % 5];
  if (typeof v === 'string') return [`${v}x`, v.toUpperCase(), '', 1][n % 4];
  if (Array.isArray(v)) {
    if (v.length === 0) return [0];
    const a = [...v];
    a[n % a.length] = perturb(a[n % a.length], Math.floor(n / a.length));
    return a;
  }
  if (v !== null && typeof v === 'object' && !isSpec(v)) {
    const keys = Object.keys(v);
    if (keys.length === 0) return { x: 1 };
    const k = keys[n % keys.length];
    return { ...v, [k]: perturb(v[k], Math.floor(n / keys.length)) };
  }
  return n % 2 === 0 ? 0 : null;
}

/**
 * Applies one mutation to the call's argument list. Slots are the arguments, then the keys of the
 * options object (the last argument, when it is a plain object). Mutations of a tensor spec change
 * its dtype, rank or one extent, or dispose it; others replace, remove or add a value.
 */
function mutate(args, m, receiver) {
  const last = args[args.length - 1];
  const hasOpts = last !== null && typeof last === 'object' && !Array.isArray(last) && !isSpec(last);
  const optKeys = hasOpts ? Object.keys(last) : [];
  const slots = args.length + optKeys.length;
  if (slots === 0) return; // extra arguments are ignored, as by every JavaScript function
  const slot = m.where % slots;
  const get = () => (slot < args.length ? args[slot] : last[optKeys[slot - args.length]]);
  const set = (x) => {
    if (receiver && slot === 0 && !(x !== null && typeof x === 'object' && 'T' in x)) return;
    if (slot < args.length) args[slot] = x;
    else last[optKeys[slot - args.length]] = x;
  };
  const cur = get();
  const isT = cur !== null && typeof cur === 'object' && 'T' in cur;
  // A method's receiver stays a tensor (calling a method on a number is JavaScript's TypeError).
  if (receiver && slot === 0 && !(isT && ['dtype', 'rank', 'dim', 'dispose'].includes(m.kind))) return;
  switch (m.kind) {
    case 'unknown':
      if (hasOpts) last[`bogus${m.n % 3}`] = m.value;
      else set(m.value);
      return;
    case 'delete':
      if (slot >= args.length) delete last[optKeys[slot - args.length]];
      else set(undefined);
      return;
    case 'dtype':
      if (isT) return set({ ...cur, dtype: DTYPES[m.n % DTYPES.length] });
      return set(m.value);
    case 'rank':
      if (isT) return set({ ...cur, T: m.n % 2 === 0 || cur.T.length === 0 ? [...cur.T, 1] : cur.T.slice(0, -1) });
      return set(m.value);
    case 'dim':
      if (isT && cur.T.length > 0) {
        const T = [...cur.T];
        const i = m.n % T.length;
        T[i] = m.n % 3 === 0 ? 0 : Math.max(0, T[i] + (m.n % 2 === 0 ? 1 : -1));
        return set({ ...cur, T });
      }
      return set(m.value);
    case 'dispose':
      if (isT) return set({ ...cur, disposed: true });
      return set(m.value);
    case 'perturb':
      if (isT) return set({ ...cur, T: cur.T.length > 0 ? perturb(cur.T, m.n).map((x) => Math.max(0, Math.min(6, Number.isInteger(x) ? x : 1))) : [1] });
      return set(perturb(cur, m.n));
    default:
      return set(m.value);
  }
}

/** Every value a caller may get wrong: specials, huge and fractional numbers, other types. */
const tensorSpec = fc.record({
  T: fc.array(fc.integer({ min: 0, max: 5 }), { maxLength: 5 }),
  dtype: fc.constantFrom(...DTYPES),
  seed: fc.nat(1000),
});
const weird = fc.oneof(
  fc.constantFrom(
    NaN, Infinity, -Infinity, -1, 0, 1, 2, 3, 2 ** 31, 2 ** 32, 2 ** 53, 1e308, 1e39, 1e-46, 0.5, 2.5, -0,
    '', 'x', '3', 'float16', 'int32', 'cpu', 'cuda:0', 'cuda:7', null, undefined, true, false, [], {}, 1n, 2n ** 64n,
    [1, 2], [-1, 0], [1n, 2], [NaN], [3, 3, 3], [2 ** 31, 0], [2 ** 31, 2 ** 31], [2 ** 53], { a: 1 },
    ['a'], [1, '2'], [true, 1], [null], [[1]],
  ),
  fc.integer({ min: -3, max: 70 }),
  fc.constantFrom(-2, -1, 0, 0.5, 1, 1.5, 2, 2.5, 3, 4, 15, 16, 17, 64),
  fc.double(),
  fc.array(fc.constantFrom(-2, -1, 0, 1, 1.5, 2, 3, 4, NaN), { minLength: 1, maxLength: 3 }),
  fc.string({ maxLength: 4 }),
  fc.array(fc.integer({ min: -2, max: 9 }), { maxLength: 4 }),
  tensorSpec,
  fc.constant({ S: 'new' }),
);
const mutation = fc.record({
  where: fc.nat(),
  kind: fc.constantFrom('value', 'value', 'perturb', 'perturb', 'perturb', 'unknown', 'delete', 'dtype', 'rank', 'dim', 'dispose'),
  n: fc.nat(),
  value: weird,
});

// ---------------------------------------------------------------------------------------------
// The property.

async function bytesOf(t) {
  const a = await t.toArray({ raw: true });
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength);
}

/** The error must be an AttnkitError with a documented code and a message naming its op. */
function checkError(e, where) {
  if (!(e instanceof ak.AttnkitError))
    throw new Error(`${where}: threw ${e instanceof Error ? `${e.constructor.name}: ${e.message}` : `a non-error ${String(e)}`} instead of an AttnkitError`);
  if (!documented.has(e.code)) throw new Error(`${where}: code ${e.code} is not documented in docs/errors.md`);
  if (!e.message.startsWith(`${e.op}: `) && !e.message.startsWith(`${e.op} `)) throw new Error(`${where}: message does not start with its op '${e.op}': ${e.message}`);
}

const outputsOf = (r) => {
  const out = [];
  const walk = (x, depth) => {
    if (x instanceof ak.Tensor) out.push(x);
    else if (x instanceof ak.BlockMask) x.dispose();
    else if (depth < 3 && x !== null && typeof x === 'object') Object.values(x).forEach((y) => walk(y, depth + 1));
  };
  walk(r, 0);
  return out;
};

/** Outcomes of the cases run: 'ok' (verified against the reference) or the error code. */
const outcomes = {};
const property = async (c) => {
  if (process.env.ATTNKIT_FUZZ_TRACE) process.stderr.write(`${fc.stringify(c)}\n`);
  const entry = fam.entries[c.fn];
  const spec = structuredClone(c.args);
  for (const m of c.muts) mutate(spec, m, entry.receiver === true);
  // A valid shape of more than 2^26 elements is a real allocation of gigabytes (and its float64
  // read-back more): not what this fuzz is for (allocation failure is the fault-injection tests').
  const huge = (x) => Array.isArray(x) && x.length > 0 && x.every((d) => Number.isSafeInteger(d) && d >= 0) && x.reduce((a, d) => a * d, 1) > 2 ** 26;
  fc.pre(!spec.some(huge));
  const made = [];
  const args = materialize(spec, made);
  const live = made.filter((t) => !t.disposed);
  const before = await Promise.all(live.map(bytesOf));
  let result;
  let err;
  try {
    result = entry.call(ak, ...args);
    if (result instanceof Promise) result = await result;
  } catch (e) {
    err = e;
  }
  try {
    if (err !== undefined) checkError(err, c.fn);
    else {
      const why = entry.invalid?.(ak, ...args);
      if (why) throw new Error(`${c.fn} accepted a call that breaks its documented rules: ${why}`);
      if (entry.verify) await entry.verify(ak, args, result, c.muts.length === 0);
    }
    const key = `${c.fn}:${err === undefined ? 'ok' : err.code.slice('ERR_ATTNKIT_'.length)}`;
    outcomes[key] = (outcomes[key] ?? 0) + 1;
    // Inputs unchanged, after a failure and after a success alike (no op writes its inputs).
    const after = await Promise.all(live.map((t) => (t.disposed ? null : bytesOf(t))));
    after.forEach((b, i) => {
      if (b !== null && Buffer.compare(b, before[i]) !== 0) throw new Error(`${c.fn}: input ${i} (${live[i]}) changed by the call${err ? ` that failed with ${err.code}` : ''}`);
    });
  } finally {
    for (const t of [...made, ...outputsOf(result)]) t.dispose();
  }
};

const t0 = Date.now();
const r = await fc.check(fc.asyncProperty(fam.arbitrary(fc, mutation), property), { numRuns, seed });
const failure = r.failed
  ? `${r.errorInstance instanceof Error ? r.errorInstance.stack ?? r.errorInstance.message : String(r.errorInstance)}\n` +
    `counterexample: ${fc.stringify(r.counterexample)}\nreproduce: node test/fuzz/run.mjs ${family} ${numRuns} ${seed} <codes> (path ${r.counterexamplePath}, shrunk ${r.numShrinks} times)`
  : undefined;
process.stdout.write(`${JSON.stringify({ family, cases: r.numRuns, seed, ms: Date.now() - t0, ok: !r.failed, failure, outcomes })}\n`);
process.exitCode = r.failed ? 1 : 0;
