/**
 * Fault injection (issue 18): allocation failures become ERR_ATTNKIT_OOM and leave the stream
 * usable — a huge tensor; a tensor's host storage failing on the JS thread; a CPU kernel's
 * scratch failing on the stream's worker (armed through the test hook `testHooks`, inert until
 * armed: runtime::arm_alloc_failures). On the fake-CUDA device, a faulting kernel rejects every
 * wait that depends on it with ERR_ATTNKIT_CUDA, the CPU keeps working, and nothing hangs (in a
 * child process, test/fixtures/fault-cuda-child.mjs).
 */
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { AttnkitError, Stream, attention, attentionBackward, empty, memory, randn, zeros, type Tensor } from '../src/index.ts';
import { native } from '../src/native.ts';
import { compiledIndex, describeEnd, runChild } from './fixtures/harness.ts';

async function rejection(p: Promise<unknown>): Promise<AttnkitError> {
  try {
    await p;
  } catch (e) {
    expect(e).toBeInstanceOf(AttnkitError);
    return e as AttnkitError;
  }
  throw new Error('expected a rejection');
}

function thrown(fn: () => unknown): AttnkitError {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(AttnkitError);
    return e as AttnkitError;
  }
  throw new Error('expected a throw');
}

const shape = [1, 40, 2, 32];
const inputs = () => [0, 1, 2].map((i) => randn(shape, { seed: 70 + i })) as [Tensor, Tensor, Tensor];
const bytesOf = async (t: Tensor) => Buffer.from((await t.toArray()).buffer as ArrayBuffer);

/** What attention(q, k, v) gives on a stream of its own: the bits a usable stream must reproduce. */
async function expected(q: Tensor, k: Tensor, v: Tensor): Promise<Buffer> {
  const s = new Stream();
  const r = attention(q, k, v, { stream: s });
  const b = await bytesOf(r.out);
  r.out.dispose();
  r.lse.dispose();
  await s.synchronize(); // a read resolves just before the worker lets go of the task's tensors
  return b;
}

/** The stream runs attention again and gets the same bits, and its next wait resolves. */
async function expectUsable(s: Stream, q: Tensor, k: Tensor, v: Tensor, want: Buffer) {
  await s.synchronize();
  const r = attention(q, k, v, { stream: s });
  expect((await bytesOf(r.out)).equals(want)).toBe(true);
  r.out.dispose();
  r.lse.dispose();
}

afterEach(() => {
  native.testHooks({ storage: 0, scratch: 0 });
});

describe('allocation failure on the CPU', () => {
  it('a huge tensor throws ERR_ATTNKIT_OOM at once, allocates nothing, and the stream stays usable', async () => {
    const [q, k, v] = inputs();
    const want = await expected(q, k, v);
    const s = new Stream();
    const before = memory().cpu;
    for (const make of [() => empty([2 ** 40]), () => zeros([2 ** 20, 2 ** 19], { stream: s }), () => randn([2 ** 38], { seed: 1, stream: s })]) {
      const e = thrown(make);
      expect(e.code).toBe('ERR_ATTNKIT_OOM');
      expect(e.message).toMatch(/out of memory allocating \d+ bytes on cpu/);
    }
    expect(memory().cpu).toBe(before);
    await expectUsable(s, q, k, v, want);
    for (const t of [q, k, v]) t.dispose();
  });

  it("an injected failure of a tensor's storage: the op throws ERR_ATTNKIT_OOM, then the stream runs it", async () => {
    const [q, k, v] = inputs();
    const want = await expected(q, k, v);
    const s = new Stream();
    const qBefore = await bytesOf(q);
    const before = memory().cpu;
    expect(native.testHooks({ storage: 1 }).armed.storage).toBe(1);
    const e = thrown(() => attention(q, k, v, { stream: s }));
    expect(e.code).toBe('ERR_ATTNKIT_OOM');
    expect(native.testHooks().armed.storage).toBe(0); // consumed by that one allocation
    expect(memory().cpu).toBe(before); // the output it failed to make was the first
    expect((await bytesOf(q)).equals(qBefore)).toBe(true);
    await expectUsable(s, q, k, v, want);
    for (const t of [q, k, v]) t.dispose();
  });

  it("an injected failure of a kernel's scratch on the worker: the waits reject with ERR_ATTNKIT_OOM, once; the stream runs on", async () => {
    const [q, k, v] = inputs();
    const want = await expected(q, k, v);
    const s = new Stream();
    native.testHooks({ scratch: 1 });
    const r = attention(q, k, v, { stream: s }); // enqueued: the failure comes on the worker
    const e = await rejection(r.out.toArray());
    expect(e.code).toBe('ERR_ATTNKIT_OOM');
    expect(e.op).toBe('attention');
    expect(e.message).toMatch(/^attention: out of memory allocating \d+ bytes on cpu/);
    expect((await rejection(r.lse.toArray())).code).toBe('ERR_ATTNKIT_OOM'); // the other output failed too
    expect(native.testHooks().armed.scratch).toBe(0);
    await expectUsable(s, q, k, v, want); // reported once: the next wait resolves
    for (const t of [q, k, v, r.out, r.lse]) t.dispose();
  });

  it('the same in a backward: the gradients reject with ERR_ATTNKIT_OOM; the stream runs the backward again', async () => {
    const [q, k, v] = inputs();
    const s = new Stream();
    const f = attention(q, k, v, { stream: s, causal: true });
    const d = randn(shape, { seed: 79, stream: s });
    const ok = attentionBackward(q, k, v, f.out, f.lse, d, { stream: s, causal: true });
    const want = await bytesOf(ok.dq);
    await s.synchronize();
    native.testHooks({ scratch: 1 });
    const bad = attentionBackward(q, k, v, f.out, f.lse, d, { stream: s, causal: true });
    expect((await rejection(bad.dq.toArray())).code).toBe('ERR_ATTNKIT_OOM');
    await s.synchronize();
    const again = attentionBackward(q, k, v, f.out, f.lse, d, { stream: s, causal: true });
    expect((await bytesOf(again.dq)).equals(want)).toBe(true);
  });
});

interface FakeCudaModule {
  fakeCudaSkipReason(): string;
  buildFakeCuda(o?: { log?: (m: string) => void }): Promise<{ path: string }>;
}
const root = fileURLToPath(new URL('..', import.meta.url));
const fake = (await import(pathToFileURL(join(root, 'scripts', 'build-fake-cuda.mjs')).href)) as FakeCudaModule;
const why = fake.fakeCudaSkipReason();

describe.skipIf(why !== '')(`a kernel fault on the fake-CUDA device${why ? ` (skipped: ${why})` : ''}`, () => {
  let addon = '';
  let index = '';
  beforeAll(async () => {
    // the one fake-CUDA build, shared with test/cuda-fake-device.test.ts (cached by digest)
    addon = (await fake.buildFakeCuda({ log: (m) => console.log(`[fake device] ${m}`) })).path;
    index = await compiledIndex();
  }, 1_800_000);

  it('rejects every pending wait with ERR_ATTNKIT_CUDA, on both CUDA streams; the CPU runs on; nothing hangs', async () => {
    const r = await runChild([join(root, 'test', 'fixtures', 'fault-cuda-child.mjs'), index], {
      timeoutMs: 60_000,
      env: { ...process.env, ATTNKIT_ADDON: addon },
    });
    expect(r.status, describeEnd(r)).toBe(0);
    type Settled = 'resolved' | { code: string; message: string };
    const out = JSON.parse(r.stdout) as {
      before: number;
      a: { sync: Settled; read: Settled; after: Settled };
      b: { read: Settled };
      cpu: { same: boolean; afterDevice: Settled };
    };
    expect(out.before).toBe(8192);
    const cuda = { code: 'ERR_ATTNKIT_CUDA', message: expect.stringMatching(/failed: cudaErrorIllegalAddress/) };
    expect(out.a.sync).toEqual({ ...cuda, message: expect.stringMatching(/^synchronize: work on cuda:0 failed: cudaErrorIllegalAddress/) });
    expect(out.a.read).toEqual(cuda); // the op queued behind the fault, and its read
    expect(out.a.after).toEqual(cuda); // later work on the faulted stream
    expect(out.b.read).toEqual(cuda); // the other CUDA stream: the context is lost (sticky), so it fails too
    expect(out.cpu.same).toBe(true); // CPU streams are unaffected: the same bits as before the fault
    expect(out.cpu.afterDevice).toEqual(cuda); // reading a device tensor back after the fault
  });
});
