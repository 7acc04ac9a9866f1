/**
 * Draws a BlockMask as SVG (behind `attnkit mask --svg`): one panel per mask entry (b, h), the block
 * grid in token coordinates (tail blocks drawn at their real size), full blocks dark, partial
 * blocks light and empty blocks white; inside partial blocks the element pattern when the mask is
 * small (both token counts at most `elementsUpTo`). Runs of equal blocks along a block row are
 * merged into one rectangle, so a causal mask of 65536 tokens stays a few thousand elements.
 * A pure function: no file or console output.
 */
import type { BlockMask, BlockMaskData } from '../index.js';

export interface MaskSvgOptions {
  /** Pixels of the longer token axis of a panel (tokens are square). Default 512. */
  size?: number;
  /** Element patterns inside partial blocks when Nq and Nk are at most this. Default 512. */
  elementsUpTo?: number;
  /** Panels per row. Default min(mask.H, 4). */
  columns?: number;
  /** At most this many (b, h) panels, row-major over (b, h); the rest are counted in the caption. Default 16. */
  maxPanels?: number;
  /** Caption above the panels (escaped). Default: geometry and counts. */
  title?: string;
  /** Block grid lines when the grid has at most this many blocks on each axis. Default 128. */
  gridUpTo?: number;
}

export const MASK_SVG_COLORS = {
  full: '#1f5f99',
  partial: '#bcd7ee',
  element: '#1f5f99',
  empty: '#ffffff',
  grid: '#d8d8d8',
  border: '#555555',
  text: '#222222',
} as const;

const fmt = (x: number) => (Number.isInteger(x) ? String(x) : x.toFixed(3).replace(/0+$/, '').replace(/\.$/, ''));

export function escapeXml(s: string): string {
  return s.replace(/[<>&"']/g, (c) => ({ '<': '&lt;', '>': '&gt;', '&': '&amp;', '"': '&quot;', "'": '&apos;' })[c]!);
}

/** Block status of one list row: 0 empty, 1 full, 2 partial (index into the partial list in `part`). */
function rowStatus(d: BlockMaskData, r: number, kBlocks: number): { status: Uint8Array; part: Int32Array } {
  const status = new Uint8Array(kBlocks);
  const part = new Int32Array(kBlocks).fill(-1);
  for (let i = d.fullOffsets[r]!; i < d.fullOffsets[r + 1]!; i++) status[d.fullIndices[i]!] = 1;
  for (let i = d.partialOffsets[r]!; i < d.partialOffsets[r + 1]!; i++) {
    const kb = d.partialIndices[i]!;
    if (status[kb] !== 1) {
      status[kb] = 2;
      part[kb] = i;
    }
  }
  return { status, part };
}

/** SVG text of `mask` (see the module comment). Reads the mask's host lists (awaits them if needed). */
export async function maskToSvg(mask: BlockMask, opts: MaskSvgOptions = {}): Promise<string> {
  const d = await mask.host();
  const size = opts.size ?? 512;
  const elementsUpTo = opts.elementsUpTo ?? 512;
  const gridUpTo = opts.gridUpTo ?? 128;
  const maxPanels = Math.max(1, opts.maxPanels ?? 16);
  const { B, H, Nq, Nk, blockQ, blockK, qBlocks, kBlocks } = mask;
  const W = mask.wordsPerRow;
  const panels = Math.min(B * H, maxPanels);
  const columns = Math.max(1, Math.min(opts.columns ?? Math.min(H, 4), panels));
  const st = size / Math.max(1, Nq, Nk); // pixels per token
  const pw = Nk * st;
  const ph = Nq * st;
  const pad = 12;
  const caption = 16;
  const header = 40;
  const legend = 22;
  const cols = columns;
  const rows = Math.ceil(panels / cols);
  const width = pad + cols * (Math.max(pw, 120) + pad);
  const height = header + rows * (ph + caption + pad) + legend + pad;
  const drawElements = Nq <= elementsUpTo && Nk <= elementsUpTo;
  const nFull = d.fullIndices.length;
  const nPartial = d.partialIndices.length;
  const total = B * H * qBlocks * kBlocks;
  const title =
    opts.title ??
    `BlockMask B=${B} H=${H} Nq=${Nq} Nk=${Nk} blocks ${blockQ}x${blockK} (${qBlocks}x${kBlocks}): ` +
      `${nFull} full, ${nPartial} partial of ${total} (block density ${total ? ((100 * (nFull + nPartial)) / total).toFixed(1) : '0'}%)`;

  const out: string[] = [];
  out.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${fmt(width)}" height="${fmt(height)}" viewBox="0 0 ${fmt(width)} ${fmt(height)}" font-family="sans-serif" font-size="12">`,
  );
  out.push(`<rect width="100%" height="100%" fill="#ffffff"/>`);
  out.push(`<text x="${pad}" y="20" fill="${MASK_SVG_COLORS.text}">${escapeXml(title)}</text>`);
  if (B * H > panels)
    out.push(`<text x="${pad}" y="34" fill="${MASK_SVG_COLORS.text}">showing ${panels} of ${B * H} (b, h) panels</text>`);

  for (let p = 0; p < panels; p++) {
    const b = Math.floor(p / H);
    const h = p % H;
    const ox = pad + (p % cols) * (Math.max(pw, 120) + pad);
    const oy = header + Math.floor(p / cols) * (ph + caption + pad) + caption;
    out.push(`<g data-b="${b}" data-h="${h}">`);
    out.push(`<text x="${fmt(ox)}" y="${fmt(oy - 4)}" fill="${MASK_SVG_COLORS.text}">b=${b} h=${h}</text>`);
    out.push(`<rect x="${fmt(ox)}" y="${fmt(oy)}" width="${fmt(pw)}" height="${fmt(ph)}" fill="${MASK_SVG_COLORS.empty}"/>`);
    const full: string[] = [];
    const partial: string[] = [];
    const elems: string[] = [];
    for (let qb = 0; qb < qBlocks; qb++) {
      const r = (b * H + h) * qBlocks + qb;
      const { status, part } = rowStatus(d, r, kBlocks);
      const q0 = qb * blockQ;
      const q1 = Math.min(Nq, q0 + blockQ);
      const y = oy + q0 * st;
      const hh = (q1 - q0) * st;
      // runs of equal status along the block row
      for (let kb = 0; kb < kBlocks; ) {
        const s = status[kb]!;
        let e = kb + 1;
        while (e < kBlocks && status[e] === s) e++;
        if (s !== 0) {
          const x = ox + kb * blockK * st;
          const w = (Math.min(Nk, e * blockK) - kb * blockK) * st;
          (s === 1 ? full : partial).push(`<rect x="${fmt(x)}" y="${fmt(y)}" width="${fmt(w)}" height="${fmt(hh)}"/>`);
        }
        kb = e;
      }
      if (!drawElements) continue;
      for (let kb = 0; kb < kBlocks; kb++) {
        if (status[kb] !== 2) continue;
        const i = part[kb]!;
        const k0 = kb * blockK;
        const nCols = Math.min(blockK, Nk - k0);
        for (let rr = 0; rr < q1 - q0; rr++) {
          const bit = (j: number) => (d.partialBits[(i * blockQ + rr) * W + (j >> 5)]! >>> (j & 31)) & 1;
          for (let j = 0; j < nCols; ) {
            if (!bit(j)) {
              j++;
              continue;
            }
            let e = j + 1;
            while (e < nCols && bit(e)) e++;
            elems.push(`<rect x="${fmt(ox + (k0 + j) * st)}" y="${fmt(oy + (q0 + rr) * st)}" width="${fmt((e - j) * st)}" height="${fmt(st)}"/>`);
            j = e;
          }
        }
      }
    }
    if (full.length) out.push(`<g class="full" fill="${MASK_SVG_COLORS.full}">${full.join('')}</g>`);
    if (partial.length) out.push(`<g class="partial" fill="${MASK_SVG_COLORS.partial}">${partial.join('')}</g>`);
    if (elems.length) out.push(`<g class="elements" fill="${MASK_SVG_COLORS.element}">${elems.join('')}</g>`);
    if (qBlocks <= gridUpTo && kBlocks <= gridUpTo) {
      const lines: string[] = [];
      for (let qb = 1; qb < qBlocks; qb++) lines.push(`M${fmt(ox)} ${fmt(oy + qb * blockQ * st)}h${fmt(pw)}`);
      for (let kb = 1; kb < kBlocks; kb++) lines.push(`M${fmt(ox + kb * blockK * st)} ${fmt(oy)}v${fmt(ph)}`);
      if (lines.length) out.push(`<path class="grid" d="${lines.join('')}" stroke="${MASK_SVG_COLORS.grid}" stroke-width="0.5" fill="none"/>`);
    }
    out.push(`<rect x="${fmt(ox)}" y="${fmt(oy)}" width="${fmt(pw)}" height="${fmt(ph)}" fill="none" stroke="${MASK_SVG_COLORS.border}" stroke-width="1"/>`);
    out.push('</g>');
  }

  const ly = height - pad - 6;
  const items: [string, string, string][] = [
    ['full', MASK_SVG_COLORS.full, 'full block'],
    ['partial', MASK_SVG_COLORS.partial, drawElements ? 'partial block (visible elements dark)' : 'partial block'],
    ['empty', MASK_SVG_COLORS.empty, 'not listed'],
  ];
  let lx = pad;
  for (const [, color, label] of items) {
    out.push(`<rect x="${lx}" y="${ly - 10}" width="12" height="12" fill="${color}" stroke="${MASK_SVG_COLORS.border}" stroke-width="0.5"/>`);
    out.push(`<text x="${lx + 16}" y="${ly}" fill="${MASK_SVG_COLORS.text}">${escapeXml(label)}</text>`);
    lx += 16 + 7 * label.length + 14;
  }
  out.push('</svg>');
  return out.join('\n');
}
