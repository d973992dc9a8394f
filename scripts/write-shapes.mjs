#!/usr/bin/env node
// Writes a demo image folder: 4 classes (circle, cross, square, triangle) of 32x32 RGB PNGs, one
// subfolder per class, to try `train --dataset <dir>` without data of one's own.
// Usage: pnpm shapes <dir> [images per class, default 150]
import { writeShapesFolder } from '../packages/datasets/dist/index.js';

const [dir, perClass = '150'] = process.argv.slice(2);
if (!dir || !/^\d+$/.test(perClass)) {
  process.stderr.write('usage: pnpm shapes <dir> [images per class, default 150]\n');
  process.exit(2);
}
const written = await writeShapesFolder(dir, { perClass: Number(perClass), size: 32, seed: 1 });
process.stdout.write(
  `Wrote ${written.files} images of ${written.classNames.join(', ')} to ${written.dir}\n`,
);
