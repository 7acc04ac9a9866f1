/**
 * mobaMask and xattentionMask on CUDA through the public API, against the CPU backend: the same
 * inputs on 'cpu' and 'cuda:0', and then
 *  - every output lives on cuda:0 (scores, selection, the BlockMask's buffers: no host round trip);
 *  - the scores agree within float32 accuracy;
 *  - the selection and the BlockMask lists (full and partial offsets, indices, bitmaps, read back with
 *    `mask.host()`) are identical to the CPU's. The inputs are chosen so that float rounding cannot
 *    decide: the float64 reference's margin (src/reference/selection.ts) is clear on every row, which
 *    the test checks first (a near tie would make the comparison meaningless, not wrong).
 * Shapes: causal and not, Nq != Nk both ways, tails, GQA, B = 2, topK beyond the causal blocks, MoBA
 * blocks larger than the mask blocks, XAttention thresholds 0 and 1, strides 1 to the block size,
 * float32, float16 and bfloat16.
 *
 * Where this process has a CUDA device (a GPU, or the fake-CUDA addon under ATTNKIT_ADDON) the cases
 * run here. Otherwise the file runs itself once more in a nested vitest against the fake-CUDA addon
 * (scripts/build-fake-cuda.mjs; the SIMT emulator runs the real kernels) and requires every case to
 * pass there; skipped visibly when that addon cannot be built.
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { describe, expect, it } from 'vitest';
import { cuda, mobaMask, xattentionMask, type FloatDType, type Tensor } from '../src/index.ts';
import { referenceMobaSelect, referenceXattentionSelect, type RefSelectDims } from '../src/reference/selection.ts';
import { fromF64, gaussian, maxAbs, maxAbsErr, read64 } from './helpers.ts';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const NESTED = process.env.ATTNKIT_SELECTION_CUDA_NESTED === '1';

interface Pair {
  cpu: { q: Tensor; k: Tensor };
  dev: { q: Tensor; k: Tensor };
  qa: Float64Array;
  ka: Float64Array;
}

// The same rounded inputs on both backends; `sharp` scales q (peaked softmax rows: thresholds pick
// strict subsets).
async function pair(dims: RefSelectDims, seed: number, dtype: FloatDType, sharp = 1): Promise<Pair> {
  const q = await fromF64(gaussian(dims.B * dims.Nq * dims.H * dims.D, seed).map((x) => x * sharp), [dims.B, dims.Nq, dims.H, dims.D], dtype);
  const k = await fromF64(gaussian(dims.B * dims.Nk * dims.Hkv * dims.D, seed + 1), [dims.B, dims.Nk, dims.Hkv, dims.D], dtype);
  return { cpu: { q: q.t, k: k.t }, dev: { q: q.t.to('cuda:0'), k: k.t.to('cuda:0') }, qa: q.a, ka: k.a };
}

type Result = ReturnType<typeof mobaMask> | ReturnType<typeof xattentionMask>;

// Scores close, selection and mask lists identical, everything of the device result on cuda:0.
async function compare(dev: Result, cpu: Result): Promise<void> {
  for (const t of [dev.scores, dev.selected, ...dev.mask.buffers()]) expect(t.device).toBe('cuda:0');
  expect(dev.mask.device).toBe('cuda:0');
  const [ds, cs] = await Promise.all([read64(dev.scores), read64(cpu.scores)]);
  expect(maxAbsErr(ds, cs), 'scores').toBeLessThanOrEqual(2e-5 * Math.max(1, maxAbs(cs)));
  expect(Array.from((await dev.selected.toArray()) as ArrayLike<number>), 'selected').toEqual(
    Array.from((await cpu.selected.toArray()) as ArrayLike<number>));
  const [dm, cm] = await Promise.all([dev.mask.host(), cpu.mask.host()]);
  expect(Array.from(dm.fullOffsets), 'full offsets').toEqual(Array.from(cm.fullOffsets));
  expect(Array.from(dm.fullIndices), 'full indices').toEqual(Array.from(cm.fullIndices));
  expect(Array.from(dm.partialOffsets), 'partial offsets').toEqual(Array.from(cm.partialOffsets));
  expect(Array.from(dm.partialIndices), 'partial indices').toEqual(Array.from(cm.partialIndices));
  expect(Array.from(dm.partialBits), 'partial bitmaps').toEqual(Array.from(cm.partialBits));
}

const dimsOf = (B: number, Nq: number, Nk: number, H: number, Hkv: number, D: number): RefSelectDims => ({ B, Nq, Nk, H, Hkv, D });

type MobaOpts = { blockSize: number; topK: number; causal?: boolean; blockQ?: number };
const MOBA: { name: string; dims: RefSelectDims; opts: MobaOpts; dtype: FloatDType }[] = [
  { name: 'causal N=150 C=32 top2 GQA', dims: dimsOf(1, 150, 150, 2, 1, 32), opts: { blockSize: 32, topK: 2 }, dtype: 'float16' },
  { name: 'causal Nq=97 < Nk=130 C=16 top3 B=2 blockQ 32', dims: dimsOf(2, 97, 130, 2, 2, 16), opts: { blockSize: 16, topK: 3, blockQ: 32 }, dtype: 'bfloat16' },
  { name: 'causal Nq=130 > Nk=70 (rows see nothing) C=16', dims: dimsOf(1, 130, 70, 2, 2, 24), opts: { blockSize: 16, topK: 2 }, dtype: 'float32' },
  { name: 'causal topK 9 > causal blocks, blockQ 16', dims: dimsOf(1, 100, 100, 1, 1, 8), opts: { blockSize: 32, topK: 9, blockQ: 16 }, dtype: 'float16' },
  { name: 'causal C=256 (mask blocks of 128 columns), blockQ 128', dims: dimsOf(1, 70, 300, 2, 1, 16), opts: { blockSize: 256, topK: 2, blockQ: 128 }, dtype: 'float16' },
  { name: 'non-causal Nq=90 Nk=120 C=16 top3', dims: dimsOf(1, 90, 120, 2, 1, 16), opts: { blockSize: 16, topK: 3, causal: false }, dtype: 'bfloat16' },
];

type XOpts = { stride: number; threshold: number; blockSize?: number; causal?: boolean };
const XATTN: { name: string; dims: RefSelectDims; opts: XOpts; dtype: FloatDType }[] = [
  { name: 'causal N=130 S=4 thr 0.9 bs 32', dims: dimsOf(1, 130, 130, 2, 2, 16), opts: { stride: 4, threshold: 0.9, blockSize: 32 }, dtype: 'float16' },
  { name: 'causal Nq=100 < Nk=165 S=4 thr 0.8 bs 32 GQA B=2', dims: dimsOf(2, 100, 165, 4, 2, 16), opts: { stride: 4, threshold: 0.8, blockSize: 32 }, dtype: 'bfloat16' },
  { name: 'causal Nq=165 > Nk=100 S=8 thr 0.9 bs 64', dims: dimsOf(1, 165, 100, 2, 1, 16), opts: { stride: 8, threshold: 0.9 }, dtype: 'float32' },
  { name: 'non-causal S=2 thr 0.5 bs 16', dims: dimsOf(1, 90, 110, 2, 2, 8), opts: { stride: 2, threshold: 0.5, blockSize: 16, causal: false }, dtype: 'float16' },
  { name: 'causal S=1 thr 0.7 bs 16', dims: dimsOf(1, 100, 100, 1, 1, 8), opts: { stride: 1, threshold: 0.7, blockSize: 16 }, dtype: 'float16' },
  { name: 'causal S = block = 32', dims: dimsOf(1, 80, 80, 2, 1, 8), opts: { stride: 32, threshold: 0.9, blockSize: 32 }, dtype: 'bfloat16' },
  { name: 'threshold 0, causal (the sink and the diagonal)', dims: dimsOf(1, 96, 96, 2, 2, 8), opts: { stride: 4, threshold: 0, blockSize: 16 }, dtype: 'float16' },
  { name: 'threshold 1, causal', dims: dimsOf(1, 96, 96, 2, 2, 8), opts: { stride: 4, threshold: 1, blockSize: 16 }, dtype: 'float16' },
  { name: 'threshold 1, non-causal', dims: dimsOf(1, 70, 90, 1, 1, 8), opts: { stride: 4, threshold: 1, blockSize: 16, causal: false }, dtype: 'float32' },
  { name: 'causal bs 128 S=8', dims: dimsOf(1, 140, 140, 1, 1, 8), opts: { stride: 8, threshold: 0.9, blockSize: 128 }, dtype: 'float16' },
];

// The float64 margin of every row: how far float rounding is from changing the choice (0: an exact
// tie, decided by the tie rule identically on both backends; Infinity: no choice).
const clear = (margin: Float64Array, min: number) => Array.from(margin).filter((m) => m > 0 && m < min).length;

describe.skipIf(!cuda.available())('mobaMask and xattentionMask on cuda:0 vs the CPU backend', () => {
  for (const [i, c] of MOBA.entries())
    it(`mobaMask ${c.name} (${c.dtype})`, { timeout: 120_000 }, async () => {
      const x = await pair(c.dims, 900 + 10 * i, c.dtype);
      const ref = referenceMobaSelect(x.qa, x.ka, c.dims, c.opts);
      expect(clear(ref.margin, 1e-4), 'rows whose choice float rounding could decide (pick another seed)').toBe(0);
      await compare(mobaMask(x.dev.q, x.dev.k, c.opts), mobaMask(x.cpu.q, x.cpu.k, c.opts));
    });
  for (const [i, c] of XATTN.entries())
    it(`xattentionMask ${c.name} (${c.dtype})`, { timeout: 120_000 }, async () => {
      const x = await pair(c.dims, 950 + 10 * i, c.dtype, 3);
      const ref = referenceXattentionSelect(x.qa, x.ka, c.dims, c.opts);
      // thresholds 0 and 1 decide by exact sums (nothing / everything), not by a cut between blocks
      if (c.opts.threshold > 0 && c.opts.threshold < 1)
        expect(clear(ref.margin, 1e-4), 'query blocks whose choice float rounding could decide (pick another seed)').toBe(0);
      await compare(xattentionMask(x.dev.q, x.dev.k, c.opts), xattentionMask(x.cpu.q, x.cpu.k, c.opts));
    });
});

// ------------------------------------------------------------------ without a device: the fake one

interface FakeCudaModule {
  fakeCudaSkipReason(): string;
  buildFakeCuda(o?: { log?: (m: string) => void }): Promise<{ path: string }>;
}
const fake = cuda.available() || NESTED ? null : ((await import(pathToFileURL(join(root, 'scripts', 'build-fake-cuda.mjs')).href)) as FakeCudaModule);
const why = fake ? fake.fakeCudaSkipReason() : 'this process has a CUDA device';

describe.skipIf(why !== '')(`the same cases on the fake CUDA device${why ? ` (skipped: ${why})` : ''}`, () => {
  it('every case passes in a nested run against the fake-CUDA addon', { timeout: 1_800_000 }, async () => {
    const addon = (await fake!.buildFakeCuda({ log: (m) => console.log(`[fake device] ${m}`) })).path;
    const tmp = mkdtempSync(join(tmpdir(), 'attnkit-selection-cuda-'));
    try {
      const report = join(tmp, 'report.json');
      // a config of its own, so that the nested run reports here and never into the main test-results.json
      const config = join(tmp, 'vitest.config.mjs');
      writeFileSync(config, `export default { test: { root: ${JSON.stringify(root)}, include: ['test/selection-cuda.test.ts'], ` +
        `reporters: [['json', { outputFile: ${JSON.stringify(report)} }]], testTimeout: 120000, fileParallelism: false } };\n`);
      const vitest = join(root, 'node_modules', 'vitest', 'vitest.mjs');
      const r = await new Promise<{ status: number | null; output: string }>((done) => {
        const child = spawn(process.execPath, [vitest, 'run', '--config', config], {
          cwd: root,
          env: { ...process.env, ATTNKIT_ADDON: addon, ATTNKIT_SELECTION_CUDA_NESTED: '1' },
        });
        let output = '';
        child.stdout.on('data', (d) => (output += d));
        child.stderr.on('data', (d) => (output += d));
        child.on('close', (status) => done({ status, output }));
      });
      expect(existsSync(report), `no report; vitest said:\n${r.output.slice(-3000)}`).toBe(true);
      const rep = JSON.parse(readFileSync(report, 'utf8')) as {
        testResults: { assertionResults: { fullName: string; status: string; failureMessages: string[] }[] }[];
      };
      const results = rep.testResults.flatMap((f) => f.assertionResults);
      expect(results.filter((a) => a.status === 'failed').map((a) => `${a.fullName}: ${a.failureMessages.join('\n').slice(0, 800)}`)).toEqual([]);
      const ran = results.filter((a) => a.fullName.startsWith('mobaMask and xattentionMask on cuda:0') && a.status === 'passed');
      console.log(`[fake device] ${ran.length} selection cases on cuda:0 passed`);
      expect(ran.length).toBe(MOBA.length + XATTN.length);
      expect(r.status).toBe(0);
    } finally {
      rmSync(tmp, { recursive: true, force: true });
    }
  });
});
