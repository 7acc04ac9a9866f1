/**
 * The CUDA runtime behind the tensor and stream API (DESIGN §2, §3, §7; docs/cuda.md).
 *
 * Without a GPU (the CI machines): the error paths — every way of asking for a CUDA device throws
 * ERR_ATTNKIT_DEVICE with the reason and allocates nothing; argument validation of
 * fromDevicePointer; devicePointer of a CPU tensor; every op without a CUDA implementation says
 * "not implemented on CUDA yet" before allocating (checked with tensors labelled cuda:0 over host
 * storage, which is what the op's validation sees); `attnkit info --kernels` with and without a
 * compile-gate report; `attnkit bench --device cuda` skipping with the reason.
 *
 * With a GPU (docs/gpu-verification.md, layer 3) the `cuda:0` suite below runs as well: round
 * trips for every dtype (bit-exact), stream ordering across CUDA streams and between the CPU and
 * CUDA, failure propagation, attention against the CPU backend, memory per device and its release.
 * Elsewhere it is skipped, visibly.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, statSync, writeFileSync, readdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  AttnkitError,
  BlockMask,
  DTYPES,
  Stream,
  Tensor,
  attention,
  attentionBackward,
  blockSparseAttention,
  cuda,
  defaultStream,
  empty,
  fromDevicePointer,
  info,
  linearAttention,
  linearAttentionStep,
  memory,
  mergeAttention,
  na1d,
  na2d,
  na3d,
  mobaMask,
  randn,
  reference,
  synchronize,
  tensor,
  zeros,
  type DType,
  type FloatDType,
} from '../src/index.ts';
import { native } from '../src/native.ts';
import { maxAbs, maxAbsErr, naiveAttention, worst } from './helpers.ts';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
/** The backend table's answer for dense attention on cuda:0 (native/ops/ops.cc). */
const support = (s: object, dtype: 'float16' | 'bfloat16' | 'float32', backward: boolean) =>
  native.supports(backward ? 'attentionBackward' : 'attention', 0, { ...s, dtype: DTYPES[dtype].code });
const HAS_CUDA = cuda.available();
const REASON = cuda.reason();

interface Want {
  code: string;
  op: string;
  argument?: string | undefined;
  message?: string;
  has?: string[];
}

function expectError(fn: () => unknown, want: Want): AttnkitError {
  let caught: unknown = 'did not throw';
  try {
    fn();
  } catch (e) {
    caught = e;
  }
  expect(caught).toBeInstanceOf(AttnkitError);
  const e = caught as AttnkitError;
  expect({ code: e.code, op: e.op }).toEqual({ code: want.code, op: want.op });
  if ('argument' in want) expect(e.argument).toBe(want.argument);
  if (want.message !== undefined) expect(e.message).toBe(want.message);
  for (const s of want.has ?? []) expect(e.message).toContain(s);
  expect(e.message.startsWith(`${want.op}: `)).toBe(true);
  return e;
}

async function rejection(p: Promise<unknown>): Promise<AttnkitError> {
  let caught: unknown = 'resolved';
  try {
    await p;
  } catch (e) {
    caught = e;
  }
  expect(caught).toBeInstanceOf(AttnkitError);
  return caught as AttnkitError;
}

/**
 * A view of `t` labelled cuda:0 (its storage stays on the host). What an op's validation sees of a
 * CUDA tensor is its `device`, so this checks the CUDA dispatch of the ops on a machine without a
 * GPU; the native side refuses CUDA storage separately (binding.h: unwrap).
 */
function labelledCuda(t: Tensor): Tensor {
  return new Tensor(t._native('test', 't'), t.dtype, t.shape, 'cuda:0', defaultStream(), t);
}

// ------------------------------------------------------------------ without a driver

describe.skipIf(HAS_CUDA)('without CUDA: every way to a CUDA device throws ERR_ATTNKIT_DEVICE with the reason', () => {
  const unavailable = (op: string, arg: string, device = 'cuda:0') =>
    `${op}: '${arg}' names device '${device}', but CUDA is not available: ${REASON}`;

  it('info() and cuda.* say why', () => {
    const i = info();
    expect(i.cuda.available).toBe(false);
    expect(i.cuda.deviceCount).toBe(0);
    expect(i.cuda.devices).toEqual([]);
    expect(typeof i.cuda.attentionKernels).toBe('boolean');
    expect(REASON.length).toBeGreaterThan(0);
    if (i.cuda.compiled && !existsSync('/dev/nvidiactl')) expect(REASON).toBe('no CUDA driver (libcuda.so.1 not found)');
    if (!i.cuda.compiled) expect(REASON).toContain('built without CUDA');
    expect(cuda.deviceCount()).toBe(0);
  });

  it("t.to('cuda:0') and t.to('cuda')", () => {
    const t = randn([2, 3], { seed: 1 });
    expectError(() => t.to('cuda:0'), { code: 'ERR_ATTNKIT_DEVICE', op: 'to', argument: 'target', message: unavailable('to', 'target') });
    expectError(() => t.to('cuda' as never), {
      code: 'ERR_ATTNKIT_DEVICE',
      op: 'to',
      argument: 'target',
      message: unavailable('to', 'target', 'cuda'),
    });
    expectError(() => t.to('cuda:1'), { code: 'ERR_ATTNKIT_DEVICE', op: 'to', message: unavailable('to', 'target', 'cuda:1') });
    t.dispose();
  });

  it('factories on cuda:0 allocate nothing', async () => {
    await synchronize(); // earlier work lets go of its tensors
    const before = memory();
    expectError(() => tensor([1, 2, 3], [3], { device: 'cuda:0' }), {
      code: 'ERR_ATTNKIT_DEVICE',
      op: 'tensor',
      argument: 'device',
      message: unavailable('tensor', 'device'),
    });
    for (const [name, f] of [
      ['empty', () => empty([4], { device: 'cuda:0' })],
      ['zeros', () => zeros([4], { device: 'cuda:0' })],
      ['randn', () => randn([4], { device: 'cuda:0', seed: 1 })],
    ] as const)
      expectError(f, { code: 'ERR_ATTNKIT_DEVICE', op: name, argument: 'device', message: unavailable(name, 'device') });
    expect(memory()).toEqual(before);
  });

  it('streams', () => {
    expectError(() => new Stream('cuda:0'), { code: 'ERR_ATTNKIT_DEVICE', op: 'Stream', message: unavailable('Stream', 'device') });
    expectError(() => defaultStream('cuda:0'), {
      code: 'ERR_ATTNKIT_DEVICE',
      op: 'defaultStream',
      message: unavailable('defaultStream', 'device'),
    });
    expectError(() => synchronize('cuda:0'), { code: 'ERR_ATTNKIT_DEVICE', op: 'defaultStream' });
    // not a device name at all: the same message as before CUDA existed
    expectError(() => new Stream('gpu:0' as never), {
      code: 'ERR_ATTNKIT_DEVICE',
      op: 'Stream',
      message: `Stream: expected 'device' to be 'cpu' or 'cuda:N', received "gpu:0"`,
    });
    expectError(() => new Stream('cuda:-1' as never), { code: 'ERR_ATTNKIT_DEVICE', op: 'Stream', has: ["'cpu' or 'cuda:N'"] });
  });

  it('memory() lists the CPU only; cuda.memoryStats() says why', () => {
    expect(Object.keys(memory())).toEqual(['cpu']);
    expectError(() => cuda.memoryStats(), {
      code: 'ERR_ATTNKIT_DEVICE',
      op: 'memoryStats',
      message: unavailable('memoryStats', 'device'),
    });
  });

  it('fromDevicePointer: valid arguments reach the device check', () => {
    expectError(() => fromDevicePointer(0x7f0000000000n, [4, 4], 'float16'), {
      code: 'ERR_ATTNKIT_DEVICE',
      op: 'fromDevicePointer',
      argument: 'device',
      message: unavailable('fromDevicePointer', 'device'),
    });
    expectError(() => fromDevicePointer(0x7f0000000000n, [4], 'float32', { device: 'cuda:3', keepAlive: {} }), {
      code: 'ERR_ATTNKIT_DEVICE',
      op: 'fromDevicePointer',
      message: unavailable('fromDevicePointer', 'device', 'cuda:3'),
    });
  });

  it('the native functions of the CUDA runtime answer without a driver', () => {
    expect(native.cudaMemoryStats(0)).toBeNull();
    const s = { B: 1, Nq: 8, Nk: 8, H: 1, Hkv: 1, D: 64, Dv: 64 };
    // what the compiled kernels support is known without a device
    expect(support(s, 'bfloat16', false)).toBe(info().cuda.attentionKernels ? '' : support(s, 'bfloat16', true));
    expect(support(s, 'float32', false).length).toBeGreaterThan(0);
  });
});

// ------------------------------------------------------------------ argument validation (any machine)

describe('fromDevicePointer: argument validation', () => {
  const op = 'fromDevicePointer';
  const P = 0x7f0000001000n;

  it('ptr must be a non-null, 64-bit, element-aligned bigint', () => {
    expectError(() => fromDevicePointer(4096 as never, [4], 'float32'), {
      code: 'ERR_ATTNKIT_ARGUMENT',
      op,
      argument: 'ptr',
      message: "fromDevicePointer: expected 'ptr' to be a bigint (a device address, as Tensor.devicePointer gives), received number",
    });
    expectError(() => fromDevicePointer(null as never, [4], 'float32'), { code: 'ERR_ATTNKIT_ARGUMENT', op, argument: 'ptr', has: ['received null'] });
    expectError(() => fromDevicePointer(0n, [4], 'float32'), {
      code: 'ERR_ATTNKIT_ARGUMENT',
      op,
      argument: 'ptr',
      message: "fromDevicePointer: expected 'ptr' to be a non-null 64-bit address, received 0n",
    });
    expectError(() => fromDevicePointer(-8n, [4], 'float32'), { code: 'ERR_ATTNKIT_ARGUMENT', op, argument: 'ptr', has: ['received -8n'] });
    expectError(() => fromDevicePointer(1n << 64n, [4], 'float32'), { code: 'ERR_ATTNKIT_ARGUMENT', op, argument: 'ptr' });
    expectError(() => fromDevicePointer(P + 2n, [4], 'float32'), {
      code: 'ERR_ATTNKIT_ARGUMENT',
      op,
      argument: 'ptr',
      message: "fromDevicePointer: expected 'ptr' to be aligned to 4 bytes (a float32 element), received 0x7f0000001002",
    });
    expectError(() => fromDevicePointer(P + 1n, [4], 'bfloat16'), {
      code: 'ERR_ATTNKIT_ARGUMENT',
      op,
      argument: 'ptr',
      message: "fromDevicePointer: expected 'ptr' to be aligned to 2 bytes (a bfloat16 element), received 0x7f0000001001",
    });
  });

  it('shape and dtype', () => {
    expectError(() => fromDevicePointer(P, [2, -1], 'float32'), { code: 'ERR_ATTNKIT_SHAPE', op, argument: 'shape', has: ['-1 at position 1'] });
    expectError(() => fromDevicePointer(P, 7 as never, 'float32'), { code: 'ERR_ATTNKIT_SHAPE', op, argument: 'shape' });
    expectError(() => fromDevicePointer(P, [4], 'float64' as never), {
      code: 'ERR_ATTNKIT_DTYPE',
      op,
      argument: 'dtype',
      message: 'fromDevicePointer: expected \'dtype\' to be one of float32, float16, bfloat16, int32, uint8, received "float64"',
    });
  });

  it('options', () => {
    expectError(() => fromDevicePointer(P, [4], 'float32', null as never), { code: 'ERR_ATTNKIT_ARGUMENT', op, argument: 'options' });
    expectError(() => fromDevicePointer(P, [4], 'float32', { deleter: () => 0 } as never), {
      code: 'ERR_ATTNKIT_ARGUMENT',
      op,
      argument: 'deleter',
      message: "fromDevicePointer: unknown option 'deleter' (known options: device, stream, keepAlive)",
    });
    expectError(() => fromDevicePointer(P, [4], 'float32', { keepAlive: 3 as never }), {
      code: 'ERR_ATTNKIT_ARGUMENT',
      op,
      argument: 'keepAlive',
      message: "fromDevicePointer: expected 'keepAlive' to be an object, received number",
    });
    expectError(() => fromDevicePointer(P, [4], 'float32', { stream: 'default' as never }), {
      code: 'ERR_ATTNKIT_ARGUMENT',
      op,
      argument: 'stream',
      message: "fromDevicePointer: expected 'stream' to be a Stream or a cudaStream_t (bigint), received string",
    });
    expectError(() => fromDevicePointer(P, [4], 'float32', { stream: -1n }), { code: 'ERR_ATTNKIT_ARGUMENT', op, argument: 'stream' });
  });

  it("'device' must be a CUDA device; a CPU stream implies the CPU", () => {
    expectError(() => fromDevicePointer(P, [4], 'float32', { device: 'cpu' }), {
      code: 'ERR_ATTNKIT_DEVICE',
      op,
      argument: 'device',
      message: "fromDevicePointer: expected 'device' to be a CUDA device ('cuda:N'), received 'cpu'",
    });
    expectError(() => fromDevicePointer(P, [4], 'float32', { stream: new Stream() }), {
      code: 'ERR_ATTNKIT_DEVICE',
      op,
      argument: 'device',
      message: "fromDevicePointer: expected 'device' to be a CUDA device ('cuda:N'), received 'cpu'",
    });
    expectError(() => fromDevicePointer(P, [4], 'float32', { device: 'tpu:0' as never }), {
      code: 'ERR_ATTNKIT_DEVICE',
      op,
      argument: 'device',
      message: `fromDevicePointer: expected 'device' to be 'cpu' or 'cuda:N', received "tpu:0"`,
    });
  });
});

describe('devicePointer', () => {
  it('of a CPU tensor throws ERR_ATTNKIT_DEVICE; of a disposed one ERR_ATTNKIT_DISPOSED', () => {
    const t = randn([3], { seed: 2 });
    expectError(() => t.devicePointer, {
      code: 'ERR_ATTNKIT_DEVICE',
      op: 'devicePointer',
      argument: 'tensor',
      message: 'devicePointer: the tensor is on the CPU; devicePointer exists for CUDA tensors only (read a CPU tensor with toArray())',
    });
    t.dispose();
    expectError(() => t.devicePointer, { code: 'ERR_ATTNKIT_DISPOSED', op: 'devicePointer', argument: 'tensor' });
  });

  it('the native function refuses a CPU storage too', () => {
    const t = randn([3], { seed: 2 });
    let caught: unknown;
    try {
      native.devicePointer(t._native('test', 't'));
    } catch (e) {
      caught = e;
    }
    expect((caught as { code?: string }).code).toBe('ERR_ATTNKIT_DEVICE');
    t.dispose();
  });
});

describe('ops without a CUDA implementation say so at the call, before allocating', () => {
  const notYet = (op: string) => {
    const kernel = /^na\dd$/.test(op) ? 'neighborhood' : op; // the backend table's row (native/ops/ops.cc)
    return `${op}: not implemented on CUDA yet (the inputs are on cuda:0; ${kernel} runs on: cpu); move them to the CPU with .to('cpu')`;
  };
  const owned: Tensor[] = [];
  const host = (shape: number[], seed: number, dtype: DType = 'float32') => {
    const t = randn(shape, { seed, dtype: dtype as FloatDType });
    owned.push(t);
    return t;
  };
  const onCuda = (shape: number[], seed: number) => labelledCuda(host(shape, seed));
  afterAll(() => owned.forEach((t) => t.dispose()));

  // Each case makes its inputs, then returns the call (so that the memory check sees the call only).
  const cases: [string, () => () => unknown][] = [
    [
      'linearAttention',
      () => {
        const [q, k, v] = [3, 4, 5].map((s) => onCuda([1, 8, 2, 8], s)) as [Tensor, Tensor, Tensor];
        return () => linearAttention(q, k, v);
      },
    ],
    [
      'linearAttentionStep',
      () => {
        const [q, k, v] = [3, 4, 5].map((s) => onCuda([1, 1, 2, 8], s)) as [Tensor, Tensor, Tensor];
        const state = onCuda([1, 2, 8, 8], 6);
        return () => linearAttentionStep(q, k, v, state);
      },
    ],
    // (na1d/na2d/na3d, blockSparseAttention, mobaMask and xattentionMask run on CUDA: test/neighborhood-cuda.test.ts,
    // test/block-sparse-cuda.test.ts, test/selection-cuda.test.ts)
  ];

  for (const [op, make] of cases)
    it(op, async () => {
      const call = make();
      await synchronize(); // nothing in flight lets go of memory during the check
      const before = memory().cpu;
      expectError(call, { code: 'ERR_ATTNKIT_UNSUPPORTED', op, message: notYet(op) });
      expect(memory().cpu).toBe(before);
    });

  it('blockSparseAttention runs on CUDA: float32 and unlisted head dims are refused at the call from the table, before allocating', async () => {
    const mask = BlockMask.causal(32, 32, { blockQ: 16, blockK: 16 });
    const [q, k, v] = [1, 2, 3].map((s) => onCuda([1, 32, 2, 8], s)) as [Tensor, Tensor, Tensor];
    await synchronize();
    const before = memory().cpu;
    expectError(() => blockSparseAttention(q, k, v, mask), {
      code: 'ERR_ATTNKIT_UNSUPPORTED',
      op: 'blockSparseAttention',
      message: info().cuda.compiled
        ? "blockSparseAttention: dtype float32 is not supported on CUDA (the kernels take float16 or bfloat16); convert with .to('bfloat16') or run on the CPU"
        : 'blockSparseAttention: attnkit was built without CUDA (nvcc was not found or ATTNKIT_CUDA=OFF)',
    });
    if (info().cuda.compiled)
      expect(native.supports('blockSparseAttentionBackward', 0, { dtype: DTYPES.float16.code, D: 96, Dv: 96 })).toBe(
        'head dim 96 is not supported on CUDA (32 or 64)', // the backward: no D = 128 yet
      );
    expect(memory().cpu).toBe(before);
  });

  it('mergeAttention runs on CUDA with 1 to 16 parts: 17 are refused at the call, naming the limit, before allocating', async () => {
    const parts = Array.from({ length: 17 }, (_, i) => ({ out: onCuda([1, 4, 2, 8], 2 * i + 1), lse: onCuda([1, 4, 2], 2 * i + 2) }));
    await synchronize();
    const before = memory().cpu;
    const why = native.supports('mergeAttention', 0, { dtype: 0, Dv: 8, parts: 16 });
    expect(why).toBe(info().cuda.compiled ? '' : 'attnkit was built without CUDA (nvcc was not found or ATTNKIT_CUDA=OFF)');
    expectError(() => mergeAttention(parts), {
      code: 'ERR_ATTNKIT_UNSUPPORTED',
      op: 'mergeAttention',
      message: info().cuda.compiled
        ? 'mergeAttention: 17 parts are not supported on CUDA (1 to 16 per call; merging is associative, so merge larger sets in groups)'
        : 'mergeAttention: attnkit was built without CUDA (nvcc was not found or ATTNKIT_CUDA=OFF)',
    });
    expect(memory().cpu).toBe(before);
  });

  it('attention and attentionBackward dispatch to CUDA (checked there: kernels, dtype, head dim)', () => {
    const q = onCuda([1, 8, 2, 64], 1);
    const s = { B: 1, Nq: 8, Nk: 8, H: 2, Hkv: 2, D: 64, Dv: 64 };
    if (!info().cuda.attentionKernels) {
      const why = support(s, 'bfloat16', false);
      expect(why).toBe(info().cuda.compiled ? 'not implemented on CUDA yet (this build has no CUDA attention kernels)' : `attnkit was built without CUDA (nvcc was not found or ATTNKIT_CUDA=OFF)`);
    } else {
      expect(support(s, 'bfloat16', false)).toBe('');
      expect(support(s, 'float16', true)).toBe('');
      expect(support(s, 'float32', false)).toBe(
        "dtype float32 is not supported on CUDA (the kernels take float16 or bfloat16); convert with .to('bfloat16') or run on the CPU",
      );
      expect(support({ ...s, D: 96, Dv: 96 }, 'float16', false)).toBe(
        'head dim 96 is not supported on CUDA (32, 64 or 128)',
      );
      expect(support({ ...s, Dv: 32 }, 'float16', false)).toContain('value head dim (32)');
    }
    if (!HAS_CUDA) {
      // the backend table refuses float32 on CUDA before the device's default stream is made
      expectError(() => attention(q, q, q), { code: 'ERR_ATTNKIT_UNSUPPORTED', op: 'attention' });
      expectError(() => attentionBackward(q, q, q, q, onCuda([1, 8, 2], 2), q), { code: 'ERR_ATTNKIT_UNSUPPORTED', op: 'attentionBackward' });
      // bfloat16 gets as far as the default stream, which needs CUDA
      const qb = labelledCuda(host([1, 8, 2, 64], 1, 'bfloat16'));
      if (info().cuda.attentionKernels)
        expectError(() => attention(qb, qb, qb), { code: 'ERR_ATTNKIT_DEVICE', op: 'defaultStream', has: [REASON] });
    }
    // a CPU stream for CUDA inputs is a device mismatch
    expectError(() => attention(q, q, q, { stream: new Stream() }), { code: 'ERR_ATTNKIT_DEVICE', op: 'attention', argument: 'stream' });
  });

  it('mixing a CUDA and a CPU tensor is a device mismatch', () => {
    const q = host([1, 8, 2, 8], 1);
    expectError(() => attention(q, onCuda([1, 8, 2, 8], 2), q), {
      code: 'ERR_ATTNKIT_DEVICE',
      op: 'attention',
      argument: 'k',
      message: "attention: expected 'k' to be on the device of 'q' (cpu), received cuda:0",
    });
  });
});

// ------------------------------------------------------------------ the CLI

/** Newest modification time of the .ts files under `d`. */
function newestTs(d: string): number {
  let t = 0;
  for (const e of readdirSync(d, { withFileTypes: true })) {
    const p = join(d, e.name);
    if (e.isDirectory()) t = Math.max(t, newestTs(p));
    else if (e.name.endsWith('.ts')) t = Math.max(t, statSync(p).mtimeMs);
  }
  return t;
}

/** The compiled package (dist/), compiled first when missing or older than the sources. */
function ensureDist(): void {
  const cli = join(root, 'dist', 'src', 'cli', 'index.js');
  const sources = newestTs(join(root, 'src'));
  if (existsSync(cli) && statSync(cli).mtimeMs >= sources) return;
  const tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc');
  spawnSync(process.execPath, [tsc, '-p', 'tsconfig.json'], { cwd: root, encoding: 'utf8' });
  if (!existsSync(cli)) throw new Error(`tsc did not produce ${cli}`);
}

describe('attnkit info --kernels and bench --device cuda', () => {
  const cli = join(root, 'dist', 'src', 'cli', 'index.js');
  let dir = '';

  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'attnkit-gate-'));
    ensureDist();
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  const run = (args: string[], env: Record<string, string> = {}) => {
    const r = spawnSync(process.execPath, [cli, ...args], { cwd: root, encoding: 'utf8', timeout: 120_000, env: { ...process.env, ...env } });
    return { status: r.status, stdout: r.stdout, stderr: r.stderr };
  };

  const kernel = (name: string, arch: string, over: Record<string, unknown> = {}) => ({
    kernel: `void attnkit::cuda::fmha::${name}(attnkit::cuda::fmha::FwdArgs)`,
    mangled: `_Z${name}`,
    file: 'native/cuda/fmha/generated/x.cu',
    arch,
    entry: true,
    registers: 168,
    smem: 0,
    dynamicSmem: 49152,
    spillStores: 0,
    spillLoads: 0,
    stackFrame: 0,
    barriers: 1,
    mma: 64,
    ldmatrix: 24,
    cpAsync: 8,
    tensorCore: true,
    violations: [],
    ...over,
  });

  it('without a report it says so (and where it looked)', () => {
    const empty = join(dir, 'none');
    const r = run(['info', '--kernels'], { ATTNKIT_COMPILE_GATE_DIR: empty });
    expect(r.status).toBe(0);
    expect(r.stdout).toContain('CUDA kernels (compile gate)');
    expect(r.stdout).toContain(`  no compile-gate report in ${empty}\n`);
    expect(r.stdout).toContain('`node scripts/compile-gate.mjs`');
    const j = run(['info', '--kernels', '--json'], { ATTNKIT_COMPILE_GATE_DIR: empty });
    expect(j.status).toBe(0);
    expect(JSON.parse(j.stdout).compileGate).toEqual({ dir: empty, reports: [] });
    // plain `info` has no kernel section
    expect(run(['info'], { ATTNKIT_COMPILE_GATE_DIR: empty }).stdout).not.toContain('compile gate');
  });

  it('with reports: one table per report, registers/smem/spills per kernel and arch, violations listed', () => {
    const d = join(dir, 'reports');
    rmSync(d, { recursive: true, force: true });
    spawnSync('mkdir', ['-p', d]);
    writeFileSync(
      join(d, 'fmha.json'),
      JSON.stringify({
        tool: 'attnkit compile gate',
        nvcc: '13.0.88',
        archs: ['sm_80', 'sm_90'],
        ok: true,
        kernels: [kernel('fwd_kernel<64>', 'sm_80'), kernel('fwd_kernel<64>', 'sm_90', { registers: 154 }), { ...kernel('helper', 'sm_80'), entry: false }],
        violations: [],
      }),
    );
    writeFileSync(
      join(d, 'spilling.json'),
      JSON.stringify({
        tool: 'attnkit compile gate',
        nvcc: '13.0.88',
        archs: ['sm_80'],
        ok: false,
        kernels: [kernel('bad_kernel', 'sm_80', { spillStores: 32, spillLoads: 40, stackFrame: 40, tensorCore: false })],
        violations: ['x.cu sm_80 bad_kernel: spills registers (32 bytes stores, 40 bytes loads)'],
      }),
    );
    writeFileSync(join(d, 'broken.json'), '{ not json');
    const r = run(['info', '--kernels'], { ATTNKIT_COMPILE_GATE_DIR: d });
    expect(r.status).toBe(0);
    const out = r.stdout;
    expect(out).toContain('  broken.json: unreadable: ');
    expect(out).toContain('  fmha.json: nvcc 13.0.88, sm_80, sm_90: passed');
    expect(out).toMatch(/arch +regs +smem +\+dyn +spill st\/ld +stack +mma +kernel/);
    expect(out).toMatch(/sm_80 +168 +0 +49152 +0\/0 +0 +64 +void attnkit::cuda::fmha::fwd_kernel<64> +\[tensor core\]/);
    expect(out).toMatch(/sm_90 +154 +0 +49152 +0\/0 +0 +64 +void attnkit::cuda::fmha::fwd_kernel<64>/);
    expect(out).not.toContain('helper'); // device functions are not rows
    expect(out).toContain('  spilling.json: nvcc 13.0.88, sm_80: FAILED (1 violation)');
    expect(out).toMatch(/sm_80 +168 +0 +49152 +32\/40 +40 +64 +void attnkit::cuda::fmha::bad_kernel\n/);
    expect(out).toContain('    violation: x.cu sm_80 bad_kernel: spills registers (32 bytes stores, 40 bytes loads)');
    // sorted by file name
    expect(out.indexOf('broken.json')).toBeLessThan(out.indexOf('fmha.json'));
    expect(out.indexOf('fmha.json')).toBeLessThan(out.indexOf('spilling.json'));
    const j = JSON.parse(run(['info', '--kernels', '--json'], { ATTNKIT_COMPILE_GATE_DIR: d }).stdout);
    expect(j.compileGate.dir).toBe(d);
    expect(j.compileGate.reports.map((x: { file: string }) => x.file)).toEqual(['broken.json', 'fmha.json', 'spilling.json']);
    expect(j.compileGate.reports[1].kernels).toHaveLength(3);
    expect(j.compileGate.reports[0].error).toMatch(/JSON/); // the parser's message for '{ not json'
  });

  it.skipIf(HAS_CUDA)('bench --device cuda skips with the reason and succeeds', () => {
    const r = run(['bench', '--device', 'cuda']);
    expect(r.status).toBe(0);
    expect(r.stderr).toBe('');
    const why = info().cuda.compiled ? `CUDA is not available: ${REASON}` : `this build of attnkit has no CUDA backend (${REASON})`;
    expect(r.stdout).toBe(`attnkit bench --device cuda:0: skipped: ${why}\n`);
    const j = run(['bench', '--device', 'cuda:1', '--op', 'attention', '--json']);
    expect(j.status).toBe(0);
    expect(JSON.parse(j.stdout)).toEqual({ ok: true, skipped: true, version: info().version, device: 'cuda:1', reason: why });
  });

  it('bench --device: what does not apply to CUDA is an error, not a skip', () => {
    for (const [args, msg] of [
      [['--op', 'na2d'], /--op na2d runs on the CPU only \(not implemented on CUDA yet\)/],
      [['--dtype', 'float32'], /--dtype float32: the CUDA kernels take float16 or bfloat16/],
      [['--threads', '2'], /--threads does not apply to --device cuda:0/],
    ] as const) {
      const r = run(['bench', '--device', 'cuda', ...args]);
      expect(r.status, args.join(' ')).toBe(1);
      expect(r.stdout).toBe('');
      expect(r.stderr).toMatch(msg);
    }
    const bad = run(['bench', '--device', 'gpu']);
    expect(bad.status).not.toBe(0);
    expect(bad.stderr).toMatch(/'gpu' is invalid. expected 'cpu', 'cuda' or 'cuda:N'/);
  });

  it.skipIf(!HAS_CUDA)('bench --device cuda --json on a GPU: validated, TFLOP/s from CUDA events', () => {
    const r = run(['bench', '--device', 'cuda', '--op', 'attention', '--shape', '1,512,4,64', '--causal', '--backward', '--repeats', '2', '--json']);
    if (!info().cuda.attentionKernels) {
      expect(JSON.parse(r.stdout).skipped).toBe(true);
      return;
    }
    expect(r.status, r.stderr).toBe(0);
    const rep = JSON.parse(r.stdout);
    expect(rep.ok).toBe(true);
    expect(rep.timing).toBe('cuda-events');
    for (const v of rep.validation) expect(v.ok).toBe(true);
    expect(rep.results.map((x: { pass: string }) => x.pass)).toEqual(['forward', 'backward']);
    for (const t of rep.results) {
      expect(t.tflops).toBeGreaterThan(0);
      expect(Number.isFinite(t.medianMs)).toBe(true);
    }
  });
});

// ------------------------------------------------------------------ on a GPU

describe.skipIf(!HAS_CUDA)('cuda:0 (runs where a CUDA device is present)', () => {
  const dev = 'cuda:0' as const;
  const owned: Tensor[] = [];
  const keep = <T extends Tensor>(t: T): T => (owned.push(t), t);
  afterAll(() => owned.forEach((t) => t.dispose()));

  /** Every bit pattern of a 16-bit dtype, and float32 specials. */
  const all16 = () => Uint16Array.from({ length: 65536 }, (_, i) => i);
  const f32special = () => {
    const a = new Float32Array(4099);
    for (let i = 0; i < a.length; i++) a[i] = (i % 7) * 0.37 - 1.1;
    a.set([0, -0, Infinity, -Infinity, NaN, 1e-45, -1e-45, 3.4028234e38, 1.17549435e-38], 4090);
    return a;
  };
  const bits32 = (a: Float32Array) => Array.from(new Uint32Array(a.buffer, a.byteOffset, a.length));

  describe('round trips, bit-exact, every dtype', () => {
    it('float32 (specials, subnormals, -0, NaN payloads)', async () => {
      const a = f32special();
      const g = keep(tensor(a, [a.length], { device: dev }));
      expect(g.device).toBe(dev);
      expect(g.stream).toBe(defaultStream(dev));
      expect(bits32(await g.toArray())).toEqual(bits32(a));
      const back = keep(g.to('cpu'));
      expect(back.device).toBe('cpu');
      expect(bits32(await back.toArray())).toEqual(bits32(a));
    });

    for (const dtype of ['float16', 'bfloat16'] as const)
      it(`${dtype}: all 65536 bit patterns, raw and widened`, async () => {
        const bits = all16();
        const h = keep(tensor(bits, [65536], { dtype }));
        const g = keep(h.to(dev));
        expect(Array.from(await g.toArray({ raw: true }))).toEqual(Array.from(bits));
        const widened = await g.toArray();
        const want = await h.toArray();
        expect(bits32(widened)).toEqual(bits32(want));
      });

    it('int32 and uint8', async () => {
      const i = Int32Array.from({ length: 1001 }, (_, k) => (k * 2654435761) | 0);
      const u = Uint8Array.from({ length: 777 }, (_, k) => (k * 37) & 255);
      expect(Array.from(await keep(tensor(i, [1001], { device: dev })).toArray())).toEqual(Array.from(i));
      expect(Array.from(await keep(tensor(u, [777], { device: dev, dtype: 'uint8' })).toArray())).toEqual(Array.from(u));
    });

    it('zeros, empty tensors, randn (the CPU numbers), reshape views', async () => {
      const z = keep(zeros([3, 5], { device: dev, dtype: 'bfloat16' }));
      expect(Array.from(await z.toArray({ raw: true }))).toEqual(new Array(15).fill(0));
      const e = keep(empty([0, 4], { device: dev }));
      expect((await e.toArray()).length).toBe(0);
      for (const dtype of ['float32', 'float16', 'bfloat16'] as const) {
        const c = keep(randn([257], { seed: 5, dtype }));
        const g = keep(randn([257], { seed: 5, dtype, device: dev }));
        expect(Array.from(await g.toArray({ raw: true }))).toEqual(Array.from(await c.toArray({ raw: true })));
      }
      const r = keep(randn([4, 6], { seed: 3, device: dev }));
      const v = r.reshape([6, 4]);
      expect(v.device).toBe(dev);
      expect(Array.from(await v.toArray())).toEqual(Array.from(await r.toArray()));
    });

    it('dtype conversion on the device equals the CPU conversion bit for bit', async () => {
      const a = f32special();
      const c = keep(tensor(a, [a.length]));
      const g = keep(c.to(dev));
      for (const dtype of ['float16', 'bfloat16', 'int32'] as const) {
        if (dtype === 'int32') continue; // float -> int of NaN/Inf is undefined behaviour on the host
        const gc = keep(g.to(dtype));
        expect(gc.device).toBe(dev);
        expect(Array.from(await gc.toArray({ raw: true }))).toEqual(Array.from(await keep(c.to(dtype)).toArray({ raw: true })));
      }
      const h = keep(tensor(all16(), [65536], { dtype: 'bfloat16', device: dev }));
      expect(bits32(await keep(h.to('float32')).toArray())).toEqual(bits32(await keep(h.to('cpu').to('float32')).toArray()));
    });

    it('between devices (cuda:0 -> cuda:1 when there are two)', async () => {
      if (cuda.deviceCount() < 2) return;
      const a = f32special();
      const g = keep(tensor(a, [a.length], { device: dev }));
      const g1 = keep(g.to('cuda:1'));
      expect(g1.device).toBe('cuda:1');
      expect(bits32(await g1.toArray())).toEqual(bits32(a));
    });
  });

  describe('device pointers', () => {
    it('devicePointer is the storage address; fromDevicePointer aliases it', async () => {
      const a = Float32Array.from({ length: 64 }, (_, i) => i);
      const t = keep(tensor(a, [64], { device: dev }));
      const p = t.devicePointer;
      expect(typeof p).toBe('bigint');
      expect(p % 256n).toBe(0n);
      expect(t.reshape([8, 8]).devicePointer).toBe(p);
      await t.stream.synchronize();
      const alias = keep(fromDevicePointer(p, [8, 8], 'float32', { keepAlive: t }));
      expect(alias.device).toBe(dev);
      expect(alias.devicePointer).toBe(p);
      expect(Array.from(await alias.toArray())).toEqual(Array.from(a));
      // an interior pointer: the elements from 16 on
      const tail = keep(fromDevicePointer(p + 64n, [48], 'float32', { stream: defaultStream(dev) }));
      expect(Array.from(await tail.toArray())).toEqual(Array.from(a.subarray(16)));
      // a foreign stream (the legacy default stream, 0): attnkit waits for its work so far
      const foreign = keep(fromDevicePointer(p, [64], 'float32', { stream: 0n }));
      expect(Array.from(await foreign.toArray())).toEqual(Array.from(a));
      const before = memory()[dev];
      alias.dispose(); // frees nothing: attnkit does not own the memory
      expect(memory()[dev]).toBe(before);
      expect(Array.from(await t.toArray())).toEqual(Array.from(a));
    });

    it('a pointer that is not device memory is refused', () => {
      expectError(() => fromDevicePointer(0x1000n, [4], 'float32'), { code: 'ERR_ATTNKIT_ARGUMENT', op: 'fromDevicePointer' });
    });
  });

  describe('streams and ordering', () => {
    it('a copy on stream B waits for its input produced behind a busy stream A', async () => {
      const A = new Stream(dev);
      const B = new Stream(dev);
      const a = Float32Array.from({ length: 1 << 16 }, (_, i) => Math.sin(i));
      const t0 = performance.now();
      A.native.sleep(250); // a spin kernel: A's device queue is busy
      const x = keep(tensor(a, [a.length]).to(dev, { stream: A }));
      expect(x.stream).toBe(A);
      const h = keep(x.to('cpu', { stream: B }));
      expect(performance.now() - t0).toBeLessThan(100); // enqueued, not waited for
      expect(Array.from(await h.toArray())).toEqual(Array.from(a));
      expect(performance.now() - t0).toBeGreaterThanOrEqual(240);
    });

    it('disposing a tensor another stream still reads frees it only after that read', async () => {
      const A = new Stream(dev);
      const B = new Stream(dev);
      const a = Float32Array.from({ length: 1 << 16 }, (_, i) => Math.cos(i));
      const x = tensor(a, [a.length]).to(dev, { stream: A }); // allocated for A
      B.native.sleep(200);
      const h = keep(x.to('cpu', { stream: B })); // read on B, behind 200 ms of B's work
      x.dispose(); // freed stream-ordered on A, after B's read
      const y = keep(tensor(new Float32Array(a.length).fill(7), [a.length]).to(dev, { stream: A })); // may reuse x's memory
      expect(Array.from(await h.toArray())).toEqual(Array.from(a));
      expect((await y.toArray())[0]).toBe(7);
    });

    it('the same with an asynchronous reader: a copy to cuda:1 (when there are two devices)', async () => {
      if (cuda.deviceCount() < 2) return;
      const A = new Stream(dev);
      const B1 = new Stream('cuda:1');
      const a = Float32Array.from({ length: 1 << 16 }, (_, i) => Math.sin(3 * i));
      const x = tensor(a, [a.length]).to(dev, { stream: A });
      B1.native.sleep(200);
      const y1 = keep(x.to('cuda:1', { stream: B1 })); // issued at once, runs 200 ms later
      await new Promise((r) => setTimeout(r, 20)); // B1's worker has issued it and let go of x
      x.dispose(); // the free on A must wait for B1's copy
      const z = keep(tensor(new Float32Array(a.length).fill(3), [a.length]).to(dev, { stream: A }));
      expect(Array.from(await y1.toArray())).toEqual(Array.from(a));
      expect((await z.toArray())[0]).toBe(3);
    });

    it('a host tensor disposed right after its copy to the device is kept until the copy ran', async () => {
      const S = defaultStream(dev);
      const a = Float32Array.from({ length: 1 << 16 }, (_, i) => i % 251);
      S.native.sleep(200); // the copy runs 200 ms later
      const host = tensor(a, [a.length]);
      const g = keep(host.to(dev));
      host.dispose();
      const noise = tensor(new Float32Array(a.length).fill(-1), [a.length]); // may reuse the host memory
      expect(Array.from(await g.toArray())).toEqual(Array.from(a));
      noise.dispose();
    });

    it('a busy CUDA stream does not delay another', async () => {
      const A = new Stream(dev);
      const B = new Stream(dev);
      A.native.sleep(600);
      const t0 = performance.now();
      const y = keep(randn([1000], { seed: 9, stream: B, device: dev }));
      await y.toArray();
      expect(performance.now() - t0).toBeLessThan(450);
      await A.synchronize();
    });

    it('CPU -> CUDA: a copy waits for the CPU stream that produces its source', async () => {
      const S = new Stream();
      S.native.sleep(200);
      const t0 = performance.now();
      const x = keep(randn([4096], { seed: 4, stream: S }));
      const g = keep(x.to(dev));
      const got = await g.toArray();
      expect(performance.now() - t0).toBeGreaterThanOrEqual(190);
      expect(Array.from(got)).toEqual(Array.from(await keep(randn([4096], { seed: 4 })).toArray()));
    });

    it('CUDA -> CPU: a CPU op waits for the copy from a busy CUDA stream', async () => {
      const A = new Stream(dev);
      const shape = [1, 40, 2, 16];
      const [q, k, v] = [1, 2, 3].map((s) => keep(randn(shape, { seed: s })));
      const hq = await q!.toArray();
      A.native.sleep(200);
      const gq = keep(q!.to(dev, { stream: A }));
      const back = keep(gq.to('cpu')); // on A (the source's stream)
      expect(back.stream).toBe(A);
      const r = attention(back, k!, v!, { causal: true }); // CPU default stream, waits for A's copy
      keep(r.out);
      keep(r.lse);
      const ref = reference.referenceAttention(
        { B: 1, Nq: 40, Nk: 40, H: 2, Hkv: 2, D: 16, Dv: 16, q: hq, k: await k!.toArray(), v: await v!.toArray() },
        { causal: true },
      );
      expect(maxAbsErr(await r.out.toArray(), ref.out)).toBeLessThan(1e-5);
    });

    it('timers keep firing while the device is busy', async () => {
      const A = new Stream(dev);
      const ticks: number[] = [];
      const timer = setInterval(() => ticks.push(performance.now()), 10);
      const t0 = performance.now();
      for (let i = 0; i < 5; i++) A.native.sleep(150);
      await A.synchronize();
      clearInterval(timer);
      const elapsed = performance.now() - t0;
      expect(elapsed).toBeGreaterThanOrEqual(700);
      let gap = 0;
      for (let i = 1; i < ticks.length; i++) gap = Math.max(gap, ticks[i]! - ticks[i - 1]!);
      expect(gap).toBeLessThan(100);
    });
  });

  describe('failures', () => {
    it('a failed task rejects the next wait, poisons its outputs, and names the cause downstream', async () => {
      const A = new Stream(dev);
      const B = new Stream(dev);
      const t = keep(empty([16], { device: dev, stream: A }));
      A.native.injectFailure('boom-cuda', [t._native('test', 't')]);
      const e = await rejection(t.toArray());
      expect(e.code).toBe('ERR_ATTNKIT_INTERNAL');
      expect(e.message).toContain('boom-cuda');
      const down = keep(t.to('cpu', { stream: B }));
      const e2 = await rejection(down.toArray());
      expect(e2.message).toContain('boom-cuda');
      expect(e2.message).toContain('reported by a later operation');
      await B.synchronize().catch(() => undefined);
      await expect(A.synchronize()).resolves.toBeUndefined();
      await expect(B.synchronize()).resolves.toBeUndefined();
      // the stream still works
      const ok = keep(tensor([1, 2, 3], [3]).to(dev, { stream: A }));
      expect(Array.from(await ok.toArray())).toEqual([1, 2, 3]);
    });

    it('out of device memory is ERR_ATTNKIT_OOM at the call', () => {
      const e = expectError(() => empty([2 ** 40], { device: dev }), { code: 'ERR_ATTNKIT_OOM', op: 'empty' });
      expect(e.message).toContain('out of memory on cuda:0 allocating 4398046511104 bytes');
    });

    it('ops without CUDA kernels refuse real CUDA tensors (TypeScript and native checks)', () => {
      const g = keep(randn([1, 8, 2, 8], { seed: 1, device: dev }));
      expectError(() => linearAttention(g, g, g), { code: 'ERR_ATTNKIT_UNSUPPORTED', op: 'linearAttention' });
      // the binding refuses a CUDA storage on a CPU path, and a CUDA stream for a CPU family
      const cpuQ = keep(randn([1, 8, 2, 8], { seed: 1 }));
      let caught: unknown;
      try {
        native.add(defaultStream().native, g._native('t', 'a'), cpuQ._native('t', 'b'), cpuQ._native('t', 'out'));
      } catch (e) {
        caught = e;
      }
      expect((caught as { code?: string }).code).toBe('ERR_ATTNKIT_UNSUPPORTED');
      expect((caught as Error).message).toContain('not implemented on CUDA yet');
      // add has a CUDA kernel (neighborhood attention's dq with additional keys)
      expect(() => native.add(defaultStream(dev).native, g._native('t', 'a'), g._native('t', 'b'), g._native('t', 'out'))).not.toThrow();
    });
  });

  describe('attention on cuda:0 vs the CPU backend', () => {
    const kernels = info().cuda.attentionKernels;
    const problems = [
      { B: 1, Nq: 97, Nk: 97, H: 2, Hkv: 2, D: 64, causal: false },
      { B: 2, Nq: 130, Nk: 130, H: 4, Hkv: 2, D: 32, causal: true },
      { B: 1, Nq: 65, Nk: 200, H: 2, Hkv: 1, D: 128, causal: true },
      { B: 1, Nq: 150, Nk: 150, H: 2, Hkv: 2, D: 64, causal: false, window: [16, 8] as [number, number] },
    ];
    for (const dtype of ['float16', 'bfloat16'] as const)
      for (const p of problems)
        it.skipIf(!kernels)(`${dtype} B=${p.B} Nq=${p.Nq} Nk=${p.Nk} H=${p.H}/${p.Hkv} D=${p.D}${p.causal ? ' causal' : ''}${p.window ? ` window ${p.window}` : ''}`, async () => {
          const opts = { causal: p.causal, ...(p.window ? { window: p.window } : {}) };
          const q = keep(randn([p.B, p.Nq, p.H, p.D], { seed: 1, dtype }));
          const k = keep(randn([p.B, p.Nk, p.Hkv, p.D], { seed: 2, dtype }));
          const v = keep(randn([p.B, p.Nk, p.Hkv, p.D], { seed: 3, dtype }));
          const dO = keep(randn([p.B, p.Nq, p.H, p.D], { seed: 4, dtype }));
          const cpu = attention(q, k, v, opts);
          const cg = cpu.backward(dO);
          const [gq, gk, gv, gdO] = [q, k, v, dO].map((t) => keep(t.to(dev)));
          const gpu = attention(gq!, gk!, gv!, opts);
          const gg = gpu.backward(gdO!);
          for (const t of [cpu.out, cpu.lse, cg.dq, cg.dk, cg.dv, gpu.out, gpu.lse, gg.dq, gg.dk, gg.dv]) keep(t);
          expect(gpu.out.device).toBe(dev);
          const rp = { ...p, Dv: p.D, q: await q.toArray(), k: await k.toArray(), v: await v.toArray() };
          const dOut = await dO.toArray();
          const naive = naiveAttention(rp, opts, dtype, { dOut });
          const ref = reference.referenceAttention(rp, opts);
          const rg = reference.referenceAttentionBackward(rp, dOut, undefined, opts);
          // FlashAttention's rule: at most 2x (3x for gradients) the error of a naive implementation in
          // the same dtype, both against the float64 reference; and close to the CPU backend.
          const check = async (name: string, got: Tensor, cpuT: Tensor, want: ArrayLike<number>, naiveV: ArrayLike<number>, factor: number) => {
            const g = await got.toArray();
            const floor = 1e-3 * maxAbs(want);
            const bound = factor * maxAbsErr(naiveV, want) + floor;
            expect(maxAbsErr(g, want), `${name}: ${worst(g, want)} (bound ${bound})`).toBeLessThanOrEqual(bound);
            expect(maxAbsErr(g, await cpuT.toArray()), `${name} vs CPU`).toBeLessThanOrEqual(2 * bound);
          };
          await check('out', gpu.out, cpu.out, ref.out, naive.out, 2);
          expect(maxAbsErr(await gpu.lse.toArray(), ref.lse)).toBeLessThan(1e-3);
          await check('dq', gg.dq, cg.dq, rg.dq, naive.dq!, 3);
          await check('dk', gg.dk, cg.dk, rg.dk, naive.dk!, 3);
          await check('dv', gg.dv, cg.dv, rg.dv, naive.dv!, 3);
        });

    it('unsupported on CUDA says so at the call (float32; a head dim without kernels)', () => {
      const f = keep(randn([1, 8, 2, 64], { seed: 1, device: dev }));
      expectError(() => attention(f, f, f), { code: 'ERR_ATTNKIT_UNSUPPORTED', op: 'attention' });
      const h = keep(randn([1, 8, 2, 96], { seed: 1, device: dev, dtype: 'float16' }));
      expectError(() => attention(h, h, h), { code: 'ERR_ATTNKIT_UNSUPPORTED', op: 'attention' });
    });
  });

  describe('the process around the device', () => {
    beforeAll(() => ensureDist());
    const child = (mode: string) => {
      const r = spawnSync(process.execPath, [join(root, 'test', 'fixtures', 'cuda-child.mjs'), join(root, 'dist', 'src', 'index.js'), mode], {
        encoding: 'utf8',
        timeout: 60_000,
      });
      expect(r.status, `status ${r.status} signal ${r.signal}; stderr: ${r.stderr.slice(-800)}`).toBe(0);
      return JSON.parse(r.stdout) as Record<string, unknown>;
    };

    it('a process exits cleanly with device work still queued', () => {
      expect(child('exit').before).toEqual([1, 2, 3]);
    });

    it('a faulting kernel rejects the following waits with ERR_ATTNKIT_CUDA (in a child process)', () => {
      const r = child('fault') as Record<string, { code: string; message: string }>;
      expect(r.sync!.code).toBe('ERR_ATTNKIT_CUDA');
      expect(r.sync!.message).toMatch(/^synchronize: work on cuda:0 failed: cudaError\w+/);
      expect(r.read!.code).toBe('ERR_ATTNKIT_CUDA');
      expect(r.other!.code).toBe('ERR_ATTNKIT_CUDA');
    });
  });

  describe('memory per device', () => {
    it('memory() counts CUDA bytes per device and dispose returns them', async () => {
      // host sources of earlier copies are released once the device has read them
      await synchronize(dev);
      const m0 = memory()[dev]!;
      expect(typeof m0).toBe('number');
      const cpu0 = memory().cpu;
      const t = empty([1000, 250], { device: dev });
      expect(memory()[dev]! - m0).toBe(1_000_000);
      expect(memory().cpu).toBe(cpu0);
      const u = zeros([3], { device: dev, dtype: 'float16' });
      expect(memory()[dev]! - m0).toBe(1_000_006);
      t.dispose();
      u.dispose();
      t.dispose(); // idempotent
      await synchronize(dev); // u's memset lets go of it once issued
      expect(memory()[dev]).toBe(m0);
      const s = cuda.memoryStats(dev);
      expect(s.allocated).toBe(m0);
      expect(s.reserved).toBeGreaterThanOrEqual(s.used);
    });

    it('disposed device memory is reused, not leaked', async () => {
      const before = cuda.memoryStats(dev);
      for (let i = 0; i < 50; i++) {
        const t = empty([16 << 20], { device: dev }); // 64 MiB
        t.dispose();
      }
      await synchronize(dev);
      const after = cuda.memoryStats(dev);
      expect(after.used - before.used).toBeLessThan(64 << 20);
      expect(after.reserved - before.reserved).toBeLessThanOrEqual(128 << 20);
    });
  });
});
