/**
 * The one-command GPU check (scripts/gpu-check.sh; docs/gpu-verification.md "The one-command GPU
 * check") rehearsed without a GPU, so that the script cannot rot between the rare days a GPU is lent:
 * `--rehearse` runs step a (info through the addon), step c (scripts/gpu-check/e2e.mjs: every op the
 * backend table claims on CUDA, on cuda:0 against the CPU backend) on the fake-CUDA addon, step d on
 * the fake device, step e skipped, step f's summary. Step b (the kernel programs) has its own test
 * (test/cuda-kernels.test.ts); here it is skipped, or replaced by a stub to check how its results
 * are folded into the summary.
 *
 * Besides the passing rehearsal: a wrong device result (GPU_CHECK_E2E_INJECT) fails step c and the
 * check; a step past its budget is reported as such; without node the shell still writes a
 * summary; a staged node is unpacked (xz, and Python's lzma) and used; GPU mode wants nvidia-smi to
 * show a GPU. Needs what the fake-CUDA addon needs (skipped visibly otherwise), bash and timeout.
 */
import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const fake = (await import(pathToFileURL(join(root, 'scripts', 'build-fake-cuda.mjs')).href)) as {
  fakeCudaSkipReason(): string;
  buildFakeCuda(o?: { log?: (m: string) => void }): Promise<{ path: string; built: boolean }>;
};
const tools = ['bash', 'timeout', 'xz', 'python3'].filter((t) => spawnSync('sh', ['-c', `command -v ${t}`]).status !== 0);
const why = fake.fakeCudaSkipReason() || (tools.length ? `${tools.join(', ')} not found` : '') ||
  (existsSync(join(root, 'dist', 'src', 'index.js')) ? '' : 'no dist/ (npm run build:ts)');

interface Step { step: string; name: string; status: string; seconds: number; budget: number; note: string }
interface Summary {
  ok: boolean;
  mode: string;
  meaningfulTimings: boolean;
  steps: Step[];
  kernels: { kernel: string; op: string; program: string; e2e: string }[];
  e2e: { ok: boolean; cases: { op: string; ok: boolean }[]; checks: { check: string; ok: boolean }[] } | null;
  bench: { results?: unknown[] } | null;
}

const tmp = mkdtempSync(join(tmpdir(), 'attnkit-gpu-check-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));
let addon = '';

/** Runs gpu-check.sh with `args` and `env` into a fresh OUT; its status, output and summary. */
function check(name: string, args: string[], env: Record<string, string> = {}) {
  const out = join(tmp, name);
  const r = spawnSync('bash', [join(root, 'scripts', 'gpu-check.sh'), ...args], {
    cwd: root,
    encoding: 'utf8',
    timeout: 120_000,
    env: { ...process.env, ATTNKIT_ADDON: addon, OUT: out, GPU_CHECK_WORK: join(tmp, `${name}-work`), ...env },
  });
  const file = join(out, 'summary.json');
  const summary = existsSync(file) ? (JSON.parse(readFileSync(file, 'utf8')) as Summary) : null;
  const log = `${r.stdout}${r.stderr}`.slice(-4000);
  const step = (s: string) => summary?.steps.find((x) => x.step === s);
  return { status: r.status, log, summary, step, out, files: existsSync(out) ? readdirSync(out) : [] };
}

describe.skipIf(why !== '')(`scripts/gpu-check.sh --rehearse${why ? ` (skipped: ${why})` : ''}`, () => {
  beforeAll(async () => {
    addon = (await fake.buildFakeCuda({ log: (m) => console.log(`[fake device] ${m}`) })).path;
  }, 1_800_000);

  it('passes end to end on the fake device, every step in the summary', () => {
    const r = check('pass', ['--rehearse', '--skip', 'b']);
    expect(r.status, r.log).toBe(0);
    const s = r.summary!;
    expect(s.ok).toBe(true);
    expect(s.mode).toBe('rehearse');
    expect(s.meaningfulTimings).toBe(false);
    expect(s.steps.map((x) => x.step)).toEqual(['setup', 'a', 'b', 'c', 'd', 'e', 'f']);
    expect(s.steps.map((x) => x.status)).toEqual(['pass', 'pass', 'skipped', 'pass', 'pass', 'skipped', 'pass']);
    expect(r.step('d')!.note).toMatch(/not meaningful/);
    expect(r.step('e')!.note).not.toBe('');
    // step c: every op the backend table claims on CUDA has passing cases; every kernel is covered
    const e2e = JSON.parse(readFileSync(join(r.out, 'c-e2e.json'), 'utf8')) as {
      claimed: string[];
      cases: { op: string; ok: boolean; checks?: { ok: boolean }[] }[];
    };
    expect(e2e.claimed).toEqual(expect.arrayContaining(['toArray', 'to', 'sleep', 'attention', 'attentionBackward']));
    for (const op of e2e.claimed) {
      const cases = e2e.cases.filter((c) => c.op.split('+').includes(op));
      expect(cases.length, op).toBeGreaterThan(0);
      for (const c of cases) expect(c.ok && c.checks!.length > 0 && c.checks!.every((x) => x.ok), JSON.stringify(c)).toBe(true);
    }
    expect(s.e2e!.checks.map((c) => c.check)).toEqual(
      expect.arrayContaining(['stream ordering (two streams)', 'synchronize', 'device memory after dispose']),
    );
    expect(s.kernels.length).toBeGreaterThan(0);
    expect(s.kernels.filter((k) => k.e2e !== 'pass')).toEqual([]);
    expect(s.bench!.results!.length).toBeGreaterThan(0);
    // what the device tool brings back: at most 8 files, plain names
    expect(r.files.length).toBeLessThanOrEqual(8);
    for (const f of r.files) expect(f).toMatch(/^[A-Za-z0-9._-]+$/);
    expect(readFileSync(join(r.out, 'summary.md'), 'utf8')).toMatch(/^# attnkit GPU check: PASSED \(rehearsal/);
  });

  it('a wrong device result fails step c, its kernels and the check', () => {
    const r = check('inject', ['--rehearse', '--skip', 'b,d'], { GPU_CHECK_E2E_INJECT: 'attentionBackward' });
    expect(r.status, r.log).toBe(1);
    expect(r.summary!.ok).toBe(false);
    expect(r.step('c')!.status).toBe('fail');
    expect(r.step('c')!.note).toMatch(/FAIL attention\+attentionBackward/);
    const bwd = r.summary!.kernels.filter((k) => k.op === 'attentionBackward');
    expect(bwd.length).toBeGreaterThan(0);
    for (const k of r.summary!.kernels) expect(k.e2e, k.kernel).toBe(k.op.startsWith('attention') ? 'fail' : 'pass');
    expect(readFileSync(join(r.out, 'summary.md'), 'utf8')).toMatch(/FAILED/);
  });

  it('a step past its budget fails as such', () => {
    const r = check('budget', ['--rehearse', '--skip', 'b,d'], { GPU_CHECK_BUDGET_C: '0.2' });
    expect(r.status, r.log).toBe(1);
    expect(r.step('c')).toMatchObject({ status: 'fail', budget: 0.2 });
    expect(r.step('c')!.note).toMatch(/ran past its budget of 0.2 s/);
  });

  it("step b's results are folded in per kernel (a stub kernels script)", () => {
    const stub = join(tmp, 'kernels-stub.sh');
    const results = {
      programs: [
        { family: 'fmha', cases: [{ name: 'fmha_fwd_dense_f16_d64', ok: true, seconds: 1 }, { name: 'fmha_bwd_dense_bf16_d128', ok: false, seconds: 1 }] },
      ],
    };
    // the interface: gpu-check-kernels.sh [--budget S] [--rehearse] OUTDIR
    writeFileSync(stub, `#!/usr/bin/env bash\ncase " $* " in *" --rehearse "*) ;; *) exit 3;; esac\ncase " $* " in *" --budget "*) ;; *) exit 4;; esac\n` +
      `out="\${@: -1}"\nmkdir -p "$out/kernels"\ncat > "$out/kernels/results.json" <<'EOF'\n${JSON.stringify(results)}\nEOF\nexit 1\n`);
    const r = check('kernels', ['--rehearse', '--skip', 'c,d'], { GPU_CHECK_KERNELS: stub });
    expect(r.status, r.log).toBe(1);
    expect(r.step('b')!.status).toBe('fail');
    const by = (name: string) => r.summary!.kernels.find((k) => k.kernel === name)!.program;
    expect([by('fmha fwd dense f16 d64'), by('fmha bwd dense bf16 d128'), by('fmha fwd dense f16 d32')]).toEqual(['pass', 'fail', 'not run']);
    expect(existsSync(join(r.out, 'b-kernels.json'))).toBe(true);
  });

  it('without a node the shell still writes the summary', () => {
    const r = check('nonode', ['--rehearse', '--skip', 'b'], { GPU_CHECK_NODE: join(tmp, 'no-such-node') });
    expect(r.status, r.log).toBe(1);
    expect(r.summary).toMatchObject({ ok: false, summaryFallback: true });
    expect(r.summary!.steps.map((x) => [x.step, x.status])).toEqual([
      ['setup', 'fail'], ['a', 'fail'], ['b', 'skipped'], ['c', 'fail'], ['d', 'fail'], ['e', 'skipped'],
    ]);
  });

  it('a staged node is unpacked (xz, then Python) and used; GPU mode wants nvidia-smi to show a GPU', () => {
    // a stand-in for the staged binary: small, but unpacked, made executable and run as node is
    const stage = join(tmp, 'stage');
    mkdirSync(join(stage, 'node'), { recursive: true });
    const wrapper = join(tmp, 'node-wrapper');
    writeFileSync(wrapper, `#!/bin/sh\nexec "${process.execPath}" "$@"\n`);
    chmodSync(wrapper, 0o755);
    spawnSync('sh', ['-c', `xz -9 -c "${wrapper}" > "${join(stage, 'node', 'node.xz')}"`]);
    const noGpu = spawnSync('sh', ['-c', 'nvidia-smi -L']).status !== 0;
    for (const unpack of ['xz', 'python']) {
      const r = check(`stage-${unpack}`, ['--skip', 'b,c,d,e'], { GPU_CHECK_STAGE: stage, GPU_CHECK_UNPACK: unpack });
      expect(r.step('setup')!.status, r.log).toBe('pass');
      expect(r.step('setup')!.note).toContain(`node ${process.version} (${join(tmp, `stage-${unpack}-work`, 'node', 'bin', 'node')})`);
      if (noGpu) {
        expect(r.step('a')!.status).toBe('fail');
        expect(r.step('a')!.note).toMatch(/nvidia-smi found no GPU/);
      }
    }
  });
  // Step e's script, where PyTorch with CUDA is absent (as here and in CI): it still writes its JSON,
  // saying why nothing was timed (a GPU session runs the real thing).
  const torchHere = spawnSync('python3', ['-c', 'import torch'], { encoding: 'utf8' }).status === 0;
  it.skipIf(torchHere || spawnSync('python3', ['--version']).status !== 0)('the peers script writes its JSON and why it timed nothing, without PyTorch', () => {
    const json = join(tmp, 'peers.json');
    const r = spawnSync('python3', [join(root, 'scripts', 'gpu-check', 'peers', 'torch_attention.py'), '--json', json, '--budget', '5'],
      { encoding: 'utf8', env: { ...process.env, PYTHONDONTWRITEBYTECODE: '1' } });
    expect(r.status, `${r.stdout}${r.stderr}`).toBe(0);
    const out = JSON.parse(readFileSync(json, 'utf8')) as { rows: unknown[]; skipped: { what: string; why: string }[] };
    expect(out.rows).toEqual([]);
    expect(out.skipped).toEqual([{ what: 'everything', why: expect.stringContaining('torch not importable') }]);
  });
});
