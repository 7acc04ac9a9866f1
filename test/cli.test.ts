/**
 * The `attnkit` command, run as users run it: the compiled dist/src/cli/index.js in a child process
 * (compiled first when dist is missing or older than the sources). Shapes are tiny: these tests
 * check the plumbing (arguments, validation, JSON, exit codes), not the speed.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { beforeAll, describe, expect, it } from 'vitest';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const cli = join(root, 'dist', 'src', 'cli', 'index.js');
const LEVELS = ['generic', 'avx2', 'avx512', 'avx512bf16', 'amx'];

/** Newest modification time of the .ts files under `dir`. */
function newestTs(dir: string): number {
  let t = 0;
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) t = Math.max(t, newestTs(p));
    else if (e.name.endsWith('.ts')) t = Math.max(t, statSync(p).mtimeMs);
  }
  return t;
}

function run(args: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [cli, ...args], { cwd: root, encoding: 'utf8', timeout: 60_000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

beforeAll(() => {
  const sources = Math.max(newestTs(join(root, 'src')), newestTs(join(root, 'bench')));
  if (existsSync(cli) && statSync(cli).mtimeMs >= sources) return;
  const tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc');
  const r = spawnSync(process.execPath, [tsc, '-p', 'tsconfig.json'], { cwd: root, encoding: 'utf8' });
  // tsc emits even with type errors elsewhere in the tree; only a missing CLI stops these tests.
  if (!existsSync(cli)) throw new Error(`tsc did not produce ${cli}:\n${r.stdout}${r.stderr}`);
});

describe('attnkit info', () => {
  it('--json reports version, CPU kernel level, threads and CUDA status', () => {
    const r = run(['info', '--json']);
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    const info = JSON.parse(r.stdout);
    const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'));
    expect(info.version).toBe(pkg.version);
    expect(LEVELS).toContain(info.cpu.isa);
    expect(LEVELS).toContain(info.cpu.detectedIsa);
    expect(LEVELS.indexOf(info.cpu.isa)).toBeLessThanOrEqual(LEVELS.indexOf(info.cpu.detectedIsa));
    expect(Number.isInteger(info.cpu.threads) && info.cpu.threads >= 1).toBe(true);
    expect(typeof info.cuda.compiled).toBe('boolean');
    expect(typeof info.cuda.available).toBe('boolean');
    expect(Number.isInteger(info.cuda.deviceCount)).toBe(true);
    expect(typeof info.cuda.reason).toBe('string');
    expect(Array.isArray(info.cuda.archs)).toBe(true);
    for (const a of info.cuda.archs) expect(typeof a).toBe('string');
    if (!info.cuda.compiled) expect(info.cuda.archs).toEqual([]);
    // Without a driver (this CI machine), CUDA is unavailable and says why.
    if (!existsSync('/dev/nvidiactl')) expect(info.cuda.available).toBe(false);
    if (info.cuda.available) {
      expect(info.cuda.deviceCount).toBeGreaterThan(0);
      expect(info.cuda.reason).toBe('');
    } else {
      expect(info.cuda.deviceCount).toBe(0);
      expect(info.cuda.reason.length).toBeGreaterThan(0);
    }
    expect(info.node).toBe(process.version);
  });

  it('prints a readable summary', () => {
    const r = run(['info']);
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/^attnkit \d+\.\d+\.\d+/);
    expect(r.stdout).toMatch(/kernel level +\S+ \(detected: \S+\)/);
    expect(r.stdout).toMatch(/threads +\d+/);
    expect(r.stdout).toMatch(/available +(yes|no: .+)/);
  });
});

describe('attnkit bench', () => {
  it('--json: validates, then reports finite positive timings for the shape asked', () => {
    const r = run(['bench', '--op', 'attention', '--shape', '1,128,2,32', '--repeats', '2', '--json']);
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    const rep = JSON.parse(r.stdout);
    expect(rep.ok).toBe(true);
    expect(rep.peak.estimate).toBe(true);
    expect(rep.validation.length).toBeGreaterThan(0);
    for (const v of rep.validation) expect(v.ok).toBe(true);
    expect(rep.results).toHaveLength(1);
    const t = rep.results[0];
    expect(t).toMatchObject({ op: 'attention', shape: [1, 128, 2, 32], dtype: 'float32', mask: 'none', pass: 'forward', repeats: 2 });
    for (const key of ['medianMs', 'minMs', 'gflops', 'flop']) {
      expect(Number.isFinite(t[key]), key).toBe(true);
      expect(t[key], key).toBeGreaterThan(0);
    }
    expect(t.minMs).toBeLessThanOrEqual(t.medianMs);
    // forward FLOP = 4 * B * H * (visible pairs = N^2) * D
    expect(t.flop).toBe(4 * 1 * 2 * 128 * 128 * 32);
  });

  it('counts causal pairs exactly and the backward as 2.5 x forward', () => {
    const r = run(['bench', '--op', 'attention', '--shape', '1,100,2,16', '--dtype', 'bfloat16', '--causal', '--backward', '--repeats', '1', '--json']);
    expect(r.status).toBe(0);
    const rep = JSON.parse(r.stdout);
    const fwd = rep.results.find((x: { pass: string }) => x.pass === 'forward');
    const bwd = rep.results.find((x: { pass: string }) => x.pass === 'backward');
    expect(fwd).toMatchObject({ dtype: 'bfloat16', mask: 'causal', shape: [1, 100, 2, 16] });
    expect(fwd.flop).toBe(4 * 2 * ((100 * 101) / 2) * 16);
    expect(bwd.flop).toBe(2.5 * fwd.flop);
    expect(rep.validation[0]).toMatchObject({ dtype: 'bfloat16', mask: 'causal', backward: true, ok: true });
    expect(Object.keys(rep.validation[0].errors).sort()).toEqual(['dk', 'dq', 'dv', 'lse', 'out']);
  });

  it('prints a table without --json', () => {
    const r = run(['bench', '--op', 'attention', '--shape', '1,64,1,8', '--repeats', '1']);
    expect(r.status).toBe(0);
    expect(r.stdout).toContain('median ms');
    expect(r.stdout).toContain('GFLOP/s');
    expect(r.stdout).toMatch(/attention +1,64,1,8 +float32 +none +fwd/);
  });

  it('rejects an unknown dtype with a clear message and a non-zero exit', () => {
    const r = run(['bench', '--op', 'attention', '--dtype', 'int8']);
    expect(r.status).not.toBe(0);
    expect(r.stdout).toBe('');
    expect(r.stderr).toMatch(/--dtype/);
    expect(r.stderr).toMatch(/'int8' is invalid/);
    expect(r.stderr).toMatch(/float32, bfloat16, float16/);
  });

  it('rejects a malformed shape, an unknown op and a zero repeat count', () => {
    for (const args of [
      ['--shape', '1,128,2'],
      ['--shape', '1,0,2,32'],
      ['--op', 'na2d'],
      ['--repeats', '0'],
    ]) {
      const r = run(['bench', ...args]);
      expect(r.status, args.join(' ')).not.toBe(0);
      expect(r.stdout, args.join(' ')).toBe('');
      expect(r.stderr, args.join(' ')).toMatch(/is invalid/);
    }
  });

  it('reports an unsupported head dim as an attnkit error, not a crash', () => {
    const r = run(['bench', '--op', 'attention', '--shape', '1,8,1,600', '--repeats', '1']);
    expect(r.status).toBe(1);
    expect(r.stdout).toBe('');
    expect(r.stderr).toMatch(/ERR_ATTNKIT_UNSUPPORTED.*head dim/);
  });
});
