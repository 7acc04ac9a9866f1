/**
 * The `attnkit` command, run as users run it: the compiled dist/src/cli/index.js in a child process
 * (compiled first when dist is missing or older than the sources). Shapes are tiny: these tests
 * check the plumbing (arguments, validation, JSON, exit codes), not the speed.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { distCli as cli, ensureDist, root } from './fuzz/dist.ts';

const LEVELS = ['generic', 'avx2', 'avx512', 'avx512bf16', 'amx'];

function run(args: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [cli, ...args], { cwd: root, encoding: 'utf8', timeout: 60_000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

// tsc emits even with type errors elsewhere in the tree; only a missing CLI stops these tests.
beforeAll(() => ensureDist());

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
      ['--op', 'na4d'],
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

describe('attnkit sim (neighborhood attention)', () => {
  it('--json: FLOP-ratio and tile-level bounds, full/partial tile counts, every candidate tile', () => {
    const r = run(['sim', '--op', 'na2d', '--input', '56,56', '--kernel', '7,7', '--json']);
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    const s = JSON.parse(r.stdout);
    expect(s).toMatchObject({ op: 'na2d', input: [56, 56], kernel: [7, 7], stride: [1, 1], dilation: [1, 1], causal: [false, false] });
    expect(s.tokens).toBe(3136);
    // every query sees exactly 7 x 7 keys (non-causal windows are shifted, never truncated)
    expect(s.visible).toBe(3136 * 49);
    expect(s.flopBound).toBeCloseTo((3136 * 3136) / (3136 * 49), 10);
    const sel = s.selected;
    expect(sel.tile).toEqual(s.chosenTile);
    expect(sel.densePairs).toBe(49 * 49);
    expect(sel.tileBound).toBeCloseTo(sel.densePairs / (sel.fullPairs + sel.partialPairs), 10);
    expect(sel.fullyBlockSparse).toBe(sel.partialPairs === 0);
    expect(sel.tileBound).toBeLessThanOrEqual(s.flopBound);
    // the candidates are 2-D tiles of 64 tokens; the chosen one is among them and visits no more pairs than any
    expect(s.candidates.length).toBe(7);
    for (const c of s.candidates) expect(c.tile[0] * c.tile[1]).toBe(64);
    const chosen = s.candidates.find((c: { tile: number[] }) => c.tile.join() === s.chosenTile.join());
    expect(chosen).toEqual(sel);
  });

  it('1-D 32K, window 2048, stride 256 is fully block-sparse: the tile bound reaches the FLOP bound (16x)', () => {
    const r = run(['sim', '--op', 'na1d', '--input', '32768', '--kernel', '2048', '--stride', '256', '--json']);
    expect(r.status).toBe(0);
    const s = JSON.parse(r.stdout);
    expect(s.flopBound).toBe(16);
    expect(s.selected).toMatchObject({ tile: [64], partialPairs: 0, fullyBlockSparse: true, tileBound: 16 });
    // stride 1: partial tiles at every window edge, a lower tile bound
    const r1 = JSON.parse(run(['sim', '--op', 'na1d', '--input', '32768', '--kernel', '2048', '--json']).stdout);
    expect(r1.selected.fullyBlockSparse).toBe(false);
    expect(r1.selected.tileBound).toBeLessThan(16);
  });

  it('--tile reports that tile only; per-axis stride, dilation and causal are taken as given', () => {
    const r = run(['sim', '--op', 'na3d', '--input', '8,12,10', '--kernel', '3', '--stride', '1,2,3', '--dilation', '2,1,1', '--causal', '1,0,0', '--tile', '2,4,8', '--json']);
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    const s = JSON.parse(r.stdout);
    expect(s).toMatchObject({ kernel: [3, 3, 3], stride: [1, 2, 3], dilation: [2, 1, 1], causal: [true, false, false] });
    expect(s.selected.tile).toEqual([2, 4, 8]);
    expect(s.candidates).toEqual([]);
    // a bare --causal makes every axis causal
    const c = JSON.parse(run(['sim', '--op', 'na2d', '--input', '9,9', '--kernel', '3', '--causal', '--json']).stdout);
    expect(c.causal).toEqual([true, true]);
    // causal windows hold at most k keys per axis: fewer visible pairs than non-causal
    expect(c.visible).toBeLessThan(81 * 9);
  });

  it('prints the bounds and the candidate table without --json', () => {
    const r = run(['sim', '--op', 'na2d', '--input', '56,56', '--kernel', '7,7']);
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/FLOP-ratio upper bound .*64\.00x/);
    expect(r.stdout).toMatch(/tile-level upper bound .*\d\.\d+x/);
    expect(r.stdout).toMatch(/\d+ full \+ \d+ partial tile pairs of 2401 dense/);
    expect(r.stdout).toMatch(/fully block-sparse: no/);
    expect(r.stdout).toMatch(/<- chosen/);
  });

  it('rejects invalid problems with the axis and the values, and malformed arguments', () => {
    let r = run(['sim', '--op', 'na2d', '--input', '13,17', '--kernel', '5,7', '--dilation', '1,3']);
    expect(r.status).toBe(1);
    expect(r.stdout).toBe('');
    expect(r.stderr).toContain("sim: expected '--kernel' times '--dilation' to be <= the input size 17 on axis 1, received 7 x 3 = 21");
    r = run(['sim', '--op', 'na1d', '--input', '20', '--kernel', '5', '--stride', '6']);
    expect(r.stderr).toContain("sim: expected '--stride' to be <= the kernel size 5 on axis 0, received 6");
    r = run(['sim', '--op', 'na2d', '--input', '13,17', '--kernel', '1,3']);
    expect(r.stderr).toContain("sim: expected '--kernel' to be > 1 on axis 0, received 1");
    r = run(['sim', '--op', 'na2d', '--input', '13,17', '--kernel', '3', '--tile', '4,8']);
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/--tile.*64 tokens/);
    r = run(['sim', '--op', 'na2d', '--input', '13,17,5', '--kernel', '3']);
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/--input has 3 entries, expected 1 or 2/);
    for (const args of [
      ['--op', 'attention', '--input', '8', '--kernel', '3'],
      ['--op', 'na2d', '--input', '8,x', '--kernel', '3'],
      ['--op', 'na2d', '--input', '8,8', '--kernel', '3', '--causal', 'yes'],
    ]) {
      r = run(['sim', ...args]);
      expect(r.status, args.join(' ')).not.toBe(0);
      expect(r.stdout, args.join(' ')).toBe('');
      expect(r.stderr, args.join(' ')).toMatch(/is invalid/);
    }
    r = run(['sim', '--op', 'na2d', '--kernel', '3']);
    expect(r.status).not.toBe(0);
    expect(r.stderr).toMatch(/--input/);
  });
});

describe('attnkit bench --op na1d|na2d|na3d', () => {
  it('--json: validates, then times NA and dense attention on the same tokens, with the sim bound', async () => {
    const r = run(['bench', '--op', 'na2d', '--input', '12,13', '--kernel', '5,3', '--stride', '1,3', '--causal', '0,1', '--heads', '2', '--head-dim', '16', '--dtype', 'float32', '--backward', '--repeats', '2', '--json']);
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    const rep = JSON.parse(r.stdout);
    expect(rep.ok).toBe(true);
    expect(rep.validation).toHaveLength(1);
    expect(rep.validation[0]).toMatchObject({ op: 'na2d', dtype: 'float32', backward: true, ok: true, causal: [false, true] });
    expect(Object.keys(rep.validation[0].errors).sort()).toEqual(['dk', 'dq', 'dv', 'lse', 'out']);
    expect(rep.results).toHaveLength(2);
    const [fwd, bwd] = rep.results;
    expect(fwd).toMatchObject({ op: 'na2d', input: [12, 13], kernel: [5, 3], stride: [1, 3], causal: [false, true], B: 1, H: 2, D: 16, pass: 'forward' });
    expect(bwd.pass).toBe('backward');
    // visible pairs from the reference: the FLOP count is 4 * B * H * visible * D
    const { neighborhoodOf } = await import('../src/reference/neighborhood.ts');
    const p = { size: [12, 13], kernelSize: [5, 3], stride: [1, 3], dilation: [1, 1], causal: [false, true] };
    let visible = 0;
    for (let t = 0; t < 156; t++) visible += neighborhoodOf(t, p).length;
    expect(fwd.visible).toBe(visible);
    expect(fwd.flop).toBe(4 * 2 * visible * 16);
    expect(bwd.flop).toBe(2.5 * fwd.flop);
    expect(fwd.flopBound).toBeCloseTo((156 * 156) / visible, 10);
    for (const t of [fwd, bwd]) {
      expect(t.na.repeats).toBe(2);
      for (const x of [t.na.medianMs, t.na.gflops, t.dense.medianMs, t.speedup, t.tileBound]) expect(x > 0 && Number.isFinite(x)).toBe(true);
      expect(t.speedup).toBeCloseTo(t.dense.medianMs / t.na.medianMs, 10);
      expect(t.ratio).toBeCloseTo(t.speedup / t.tileBound, 10);
      expect(t.ratioBest).toBeCloseTo(t.dense.minMs / t.na.minMs / t.tileBound, 10);
      expect(t.tile[0] * t.tile[1]).toBe(64);
    }
    expect(fwd.backwardOverForward).toBeNull();
    expect(bwd.backwardOverForward).toBeCloseTo(bwd.na.medianMs / fwd.na.medianMs, 10);
  });

  it('prints a table without --json (1-D, bfloat16, explicit tile)', () => {
    const r = run(['bench', '--op', 'na1d', '--input', '300', '--kernel', '33', '--dilation', '2', '--tile', '64', '--heads', '1', '--head-dim', '8', '--dtype', 'bfloat16', '--repeats', '1']);
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    expect(r.stdout).toContain('speedup');
    expect(r.stdout).toContain('tile bound');
    expect(r.stdout).toMatch(/na1d +300 +33 +1 +2 +0 +64 +bfloat16 +fwd/);
  });

  it('rejects invalid problems and options that do not belong to the op', () => {
    let r = run(['bench', '--op', 'na2d', '--input', '8,8', '--kernel', '9,3']);
    expect(r.status).toBe(1);
    expect(r.stdout).toBe('');
    expect(r.stderr).toContain("bench: expected '--kernel' times '--dilation' to be <= the input size 8 on axis 0, received 9 x 1 = 9");
    r = run(['bench', '--op', 'attention', '--input', '8', '--repeats', '1']);
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/--input applies to --op na1d\|na2d\|na3d only/);
    r = run(['bench', '--op', 'na3d', '--stride', '2']);
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/need --input and --kernel/);
    r = run(['bench', '--op', 'na2d', '--input', '8,8', '--kernel', '3', '--tile', '8,4']);
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/--tile must have 2 entries holding 64 tokens/);
  });
});

describe('attnkit mask and bench --op blocksparse|moba', () => {
  it('draws a documents mask as SVG and reports its blocks', () => {
    const dir = mkdtempSync(join(tmpdir(), 'attnkit-mask-'));
    const file = join(dir, 'docs.svg');
    const r = run(['mask', '--svg', file, '--kind', 'documents', '--docs', '40,1,0,90', '--block-q', '16', '--block-k', '32']);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/131x131 tokens, \d+ full and \d+ partial blocks, density 0\.\d{3}/);
    const svg = readFileSync(file, 'utf8');
    expect(svg.startsWith('<svg')).toBe(true);
    expect(svg).toContain('</svg>');
  });

  it('bench --op blocksparse validates, then reports finite speedups for each density', () => {
    const r = run(['bench', '--op', 'blocksparse', '--quick', '--density', '0.5', '--dtype', 'float32', '--json']);
    expect(r.status, r.stderr).toBe(0);
    const report = JSON.parse(r.stdout) as {
      validation: { ok: boolean }[];
      density: { dtype: string; density: number; sparseFwdMs: number; denseFwdMs: number; speedupFwd: number }[];
    };
    expect(report.validation.length).toBeGreaterThan(0);
    expect(report.validation.every((v) => v.ok)).toBe(true);
    expect(report.density).toHaveLength(1);
    const row = report.density[0]!;
    expect(row.dtype).toBe('float32');
    expect(row.density).toBe(0.5);
    for (const x of [row.sparseFwdMs, row.denseFwdMs, row.speedupFwd]) expect(Number.isFinite(x) && x > 0).toBe(true);
  });

  it('rejects --density outside [0, 1]', () => {
    const r = run(['bench', '--op', 'blocksparse', '--density', '1.5']);
    expect(r.status).not.toBe(0);
    expect(r.stderr).toContain('expected densities in [0, 1]');
  });
});
