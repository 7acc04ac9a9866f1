#!/usr/bin/env node
/**
 * Step f of scripts/gpu-check.sh: summary.json and summary.md from the steps' records.
 *
 *   node scripts/gpu-check/summary.mjs --mode gpu|rehearse --steps STEPS.tsv --out OUTDIR [--budget SECONDS]
 *
 * STEPS.tsv has one line per step (step, name, status, seconds, budget, note) as gpu-check.sh
 * recorded them; OUTDIR holds what the steps wrote: a-info.json, b-kernels.json (the kernel
 * programs' results.json), c-e2e.json (scripts/gpu-check/e2e.mjs), d-bench.json, e-peers.json.
 * Node built-ins only (the GPU machine has nothing else). Exits 1 when it cannot write the summary.
 */
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

const args = process.argv.slice(2);
const opt = (name) => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : undefined;
};
const started = performance.now();
const mode = opt('--mode') ?? 'gpu';
const stepsFile = opt('--steps');
const out = opt('--out');
if (!stepsFile || !out) {
  console.error('usage: node scripts/gpu-check/summary.mjs --mode gpu|rehearse --steps STEPS.tsv --out OUTDIR');
  process.exit(2);
}

/** A JSON file of OUTDIR, or null (absent or not JSON: the step's status already says why). */
function readJson(name) {
  const p = join(out, name);
  if (!existsSync(p)) return null;
  try {
    return JSON.parse(readFileSync(p, 'utf8'));
  } catch (e) {
    return { unreadable: `${name}: ${e.message}` };
  }
}

const steps = readFileSync(stepsFile, 'utf8')
  .split('\n')
  .filter((l) => l.trim())
  .map((l) => {
    const [step, name, status, seconds, budget, note] = l.split('\t');
    return { step, name, status, seconds: Number(seconds), budget: Number(budget), note: note ?? '' };
  });

const info = readJson('a-info.json');
const kernelsRun = readJson('b-kernels.json');
const e2e = readJson('c-e2e.json');
const bench = readJson('d-bench.json');
const peers = readJson('e-peers.json');

const norm = (s) => String(s).toLowerCase().replace(/[^a-z0-9]+/g, '_').replace(/^_|_$/g, '');
const SHORT = { float16: 'f16', bfloat16: 'bf16', float32: 'f32' };

/** The status of one kernel row in the e2e result: every case of its op, dtype and head dim. */
function e2eStatus(k) {
  if (!e2e || !Array.isArray(e2e.cases)) return 'not run';
  const cases = e2e.cases.filter(
    (c) => String(c.op).split('+').includes(k.op) && c.dtype === k.dtype && (k.headDim === 0 || c.D === k.headDim),
  );
  if (cases.length === 0) return 'not run';
  return cases.every((c) => c.ok) ? 'pass' : 'fail';
}
/** The status of one kernel row in the kernel programs' results: the cases named after it. */
function programStatus(k) {
  const programs = kernelsRun?.programs;
  if (!Array.isArray(programs)) return 'not run';
  const name = norm(k.kernel);
  const cases = programs
    .filter((p) => p.family === k.family)
    .flatMap((p) => p.cases ?? [])
    .filter((c) => norm(c.name) === name || norm(c.name).startsWith(name + '_'));
  if (cases.length === 0) return 'not run';
  return cases.every((c) => c.ok) ? 'pass' : 'fail';
}

const kernels = (info?.cuda?.kernels ?? []).map((k) => ({
  kernel: k.kernel,
  family: k.family,
  op: k.op,
  dtype: k.dtype,
  headDim: k.headDim,
  program: programStatus(k),
  e2e: e2eStatus(k),
}));

const failed = steps.filter((s) => s.status === 'fail');
const summaryStep = { step: 'f', name: 'summary', status: 'pass', seconds: 0, budget: Number(opt('--budget') ?? 0), note: '' };
const all = [...steps, summaryStep];
const summary = {
  ok: failed.length === 0 && steps.length > 0,
  mode,
  date: new Date().toISOString(),
  meaningfulTimings: mode === 'gpu',
  machine: {
    devices: info?.cuda?.devices ?? [],
    driverVersion: info?.cuda?.driverVersion ?? null,
    runtimeVersion: info?.cuda?.runtimeVersion ?? null,
    archs: info?.cuda?.archs ?? [],
    attnkit: info?.version ?? null,
  },
  steps: all,
  kernels,
  e2e: e2e && !e2e.unreadable
    ? {
        ok: e2e.ok,
        cases: (e2e.cases ?? []).map((c) => ({ op: c.op, dtype: c.dtype, D: c.D, ok: c.ok, error: c.error, failed: (c.checks ?? []).filter((x) => !x.ok).map((x) => x.name) })),
        checks: (e2e.checks ?? []).map((c) => ({ check: c.check, ok: c.ok, error: c.error })),
        memory: e2e.memory,
      }
    : e2e,
  kernelPrograms: kernelsRun,
  bench: bench && Array.isArray(bench.results)
    ? { ok: bench.ok, deviceName: bench.deviceName, validation: bench.validation, results: bench.results }
    : bench,
  peers,
};
summaryStep.seconds = Math.round((performance.now() - started) / 100) / 10;
writeFileSync(join(out, 'summary.json'), JSON.stringify(summary, null, 2) + '\n');

// ------------------------------------------------------------------ summary.md
const md = [];
const cell = (s) => String(s ?? '').replace(/\|/g, '\\|').replace(/\n/g, ' ');
const table = (head, rows) => {
  md.push(`| ${head.join(' | ')} |`, `|${head.map(() => '---').join('|')}|`);
  for (const r of rows) md.push(`| ${r.map(cell).join(' | ')} |`);
  md.push('');
};
const dev = summary.machine.devices[0];
md.push(`# attnkit GPU check: ${summary.ok ? 'PASSED' : 'FAILED'} (${mode === 'rehearse' ? 'rehearsal, no GPU' : 'GPU'})`, '');
md.push(
  `${summary.date}; attnkit ${summary.machine.attnkit ?? '?'}; ` +
    (dev ? `${dev.name} (sm_${String(dev.computeCapability).replace('.', '')}, ${(dev.memory / 2 ** 30).toFixed(0)} GiB, ${dev.multiprocessors} SMs)` : 'no device') +
    `; kernels built for ${summary.machine.archs.join(', ') || '?'}`,
  '',
);
if (mode === 'rehearse') md.push('A rehearsal: the fake-CUDA device and the SIMT emulator. Its timings mean nothing.', '');
const sum = (k) => all.reduce((n, s) => n + (Number.isFinite(s[k]) ? s[k] : 0), 0);
md.push('## Steps', '', `${sum('seconds').toFixed(1)} s in all, of a budget of ${sum('budget')} s.`, '');
table(
  ['step', 'what', 'status', 'seconds', 'budget s', 'note'],
  all.map((s) => [s.step, s.name, s.status, Number.isFinite(s.seconds) ? s.seconds : '', s.budget || '', s.note]),
);
if (kernels.length > 0) {
  md.push('## Kernels', '', '`program`: the family\'s kernel test program (step b); `e2e`: through the package (step c).', '');
  table(['kernel', 'op', 'dtype', 'D', 'program', 'e2e'], kernels.map((k) => [k.kernel, k.op, SHORT[k.dtype] ?? k.dtype, k.headDim || 'any', k.program, k.e2e]));
}
if (summary.e2e?.cases) {
  md.push('## End to end (step c)', '');
  table(
    ['op', 'dtype', 'D', 'result', 'failed checks'],
    summary.e2e.cases.map((c) => [c.op, c.dtype ?? '', c.D ?? '', c.ok ? 'pass' : 'FAIL', c.error ?? c.failed.join(', ')]),
  );
  table(['check', 'result', 'note'], summary.e2e.checks.map((c) => [c.check, c.ok ? 'pass' : 'FAIL', c.error ?? '']));
}
if (kernelsRun?.programs) {
  md.push('## Kernel programs (step b)', '');
  table(
    ['family', 'cases', 'failed', 'sanitizer'],
    kernelsRun.programs.map((p) => [
      p.family,
      (p.cases ?? []).length,
      (p.cases ?? []).filter((c) => !c.ok).map((c) => c.name).join(', ') || '-',
      p.sanitizer ? JSON.stringify(p.sanitizer) : '-',
    ]),
  );
}
if (summary.bench?.results) {
  md.push(`## Benchmark (step d)${mode === 'rehearse' ? ': fake device, not meaningful' : ''}`, '');
  table(
    ['shape B,N,H,D', 'dtype', 'mask', 'pass', 'median ms', 'TFLOP/s', 'vs dense'],
    summary.bench.results.map((r) => [
      r.shape.join(','),
      SHORT[r.dtype] ?? r.dtype,
      r.mask,
      r.pass,
      r.medianMs.toPrecision(4),
      r.tflops.toPrecision(4),
      r.speedupVsDense == null ? '' : `${r.speedupVsDense.toFixed(2)}x`,
    ]),
  );
} else if (bench?.skipped) md.push(`## Benchmark (step d)`, '', `skipped by attnkit bench: ${bench.reason}`, '');
const skipped = all.filter((s) => s.status !== 'pass' && s.status !== 'fail');
if (skipped.length > 0) {
  md.push('## Skipped', '');
  for (const s of skipped) md.push(`- step ${s.step} (${s.name}): ${s.status}${s.note ? `: ${s.note}` : ''}`);
  md.push('');
}
writeFileSync(join(out, 'summary.md'), md.join('\n'));
console.error(`gpu-check: summary ${summary.ok ? 'passed' : 'FAILED'}: ${join(out, 'summary.md')}`);
