import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { writeShapesFolder } from '@shardline/datasets';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCli } from './runCli.js';

let root: string;
let shapes: string;

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'shardline-own-bad-'));
  shapes = join(root, 'shapes');
  await writeShapesFolder(shapes, { perClass: 8, size: 16, seed: 2 });
});
afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

/** `train --in-process` with `args`, expected to fail before any step; returns stderr. */
async function refused(args: string[]): Promise<string> {
  const run = await runCli(['train', '--in-process', '--out', join(root, 'out'), ...args], {
    XDG_CACHE_HOME: join(root, 'cache'),
  });
  expect(run.code, run.stdout).not.toBe(0);
  return run.stderr;
}

describe('bad inputs for your own models and images', () => {
  it('a --dataset that is neither a built-in name nor a folder', async () => {
    expect(await refused(['--dataset', join(root, 'nowhere')])).toContain(
      `--dataset ${join(root, 'nowhere')} is neither a built-in dataset (fashion-mnist, mnist) nor an existing folder. Pass a built-in name, or the path of an image folder`,
    );
  });

  it('image-folder flags on a built-in dataset', async () => {
    expect(await refused(['--dataset', 'mnist', '--image-size', '32x32'])).toContain(
      '--image-size apply to image folders, but --dataset mnist is a built-in dataset',
    );
  });

  it('a malformed --image-size, --validation-split or --class-names', async () => {
    expect(await refused(['--dataset', shapes, '--image-size', 'big'])).toMatch(
      /'big' is invalid\. Expected an image size as HEIGHTxWIDTH \(such as 64x64\)/,
    );
    expect(await refused(['--dataset', shapes, '--validation-split', '1.5'])).toMatch(
      /Expected a fraction between 0 and 1 \(exclusive\)/,
    );
    expect(await refused(['--dataset', shapes, '--class-names', 'circle'])).toMatch(
      /Expected at least two class folder names separated by commas/,
    );
  });

  it('a folder without train/ and test/ and no --validation-split', async () => {
    expect(await refused(['--dataset', shapes, '--model', 'mlp'])).toMatch(
      /validationSplit|--validation-split/,
    );
  });

  it('a folder with one class', async () => {
    const one = join(root, 'one-class');
    await mkdir(join(one, 'only'), { recursive: true });
    await writeFile(join(one, 'only', 'a.txt'), 'not an image');
    expect(await refused(['--dataset', one, '--validation-split', '0.2'])).toMatch(
      /two classes|2 classes|at least two/,
    );
  });

  it('--hp given twice, for an unknown name, or with a bad value', async () => {
    expect(
      await refused(['--model', 'mlp', '--hp', 'dropout=0.1', '--hp', 'dropout=0.2']),
    ).toContain(
      '--hp dropout is given twice (dropout=0.1 and dropout=0.2); give each hyperparameter once.',
    );
    expect(
      await refused(['--model', 'mlp', '--hp', 'dropot=0.1', '--limit-train', '10']),
    ).toContain('Unknown option "dropot" for model "mlp"');
    expect(
      await refused(['--model', 'mlp', '--hp', 'hiddenUnits=many', '--limit-train', '10']),
    ).toContain('Hyperparameter "hiddenUnits" of model "mlp" must be');
    expect(await refused(['--model', 'mlp', '--hp', 'novalue'])).toMatch(
      /'novalue' is invalid\. Expected name=value/,
    );
  });

  it('a model file or plugin that does not exist, and a model name that is neither', async () => {
    expect(await refused(['--model', join(root, 'missing.json')])).toContain(
      `Model file ${join(root, 'missing.json')} does not exist`,
    );
    expect(await refused(['--model', 'mlp', '--plugin', join(root, 'missing.mjs')])).toContain(
      `Plugin ${join(root, 'missing.mjs')} does not exist`,
    );
    expect(await refused(['--model', 'resnet50'])).toContain(
      'or the path of a model file (a model.json or its folder, or an ES module .mjs/.js exporting a model spec)',
    );
  });
});
