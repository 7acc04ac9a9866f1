/** `attnkit mask`: draws a block mask as SVG (src/cli/mask-svg.ts) and prints its block counts. */

/** The options of `attnkit mask` (commander's camel-cased names). */
export interface MaskOpts {
  svg: string;
  kind: 'causal' | 'window' | 'documents' | 'neighborhood';
  n?: number;
  nk?: number;
  blockQ?: number;
  blockK?: number;
  window?: number[];
  docs?: number[];
  input?: number[];
  kernel?: number[];
}

/** `attnkit mask --svg out.svg`: draws a mask built by one of the builders. */
export async function maskCommand(o: MaskOpts): Promise<void> {
  const ak = await import('../index.js');
  const { maskToSvg } = await import('./mask-svg.js');
  const { writeFileSync } = await import('node:fs');
  const blocks = { blockQ: o.blockQ ?? 16, blockK: o.blockK ?? 16 };
  const n = o.n ?? 256;
  let mask;
  switch (o.kind) {
    case 'causal':
      mask = ak.BlockMask.causal(n, o.nk ?? n, blocks);
      break;
    case 'window': {
      const [left, right] = o.window ?? [32, 0];
      mask = ak.BlockMask.slidingWindow(n, o.nk ?? n, left!, right ?? left!, blocks);
      break;
    }
    case 'documents':
      mask = ak.BlockMask.documents(o.docs ?? [40, 1, 0, 90, 125], blocks);
      break;
    case 'neighborhood': {
      // One --kernel value means every axis (as na2d's `kernelSize: 7`); else one per axis. The
      // builder refuses what does not fit the grid, so a wrong mask is never drawn.
      const kernel = o.kernel === undefined ? 5 : o.kernel.length === 1 ? o.kernel[0]! : o.kernel;
      mask = ak.BlockMask.neighborhood({ size: o.input ?? [16, 16], kernelSize: kernel }, blocks);
      break;
    }
  }
  // Everything that can fail runs before the file is written: an error leaves no file behind.
  const svg = await maskToSvg(mask, { title: `${o.kind} mask, blocks ${blocks.blockQ}x${blocks.blockK}` });
  const c = await mask.counts();
  const density = await mask.density();
  writeFileSync(o.svg, svg);
  process.stdout.write(`wrote ${o.svg}: ${mask.Nq}x${mask.Nk} tokens, ${c.full} full and ${c.partial} partial blocks, density ${density.toFixed(3)}\n`);
}
