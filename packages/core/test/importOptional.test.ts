import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';

// The built module, as an installed CLI runs it (the root test script builds first).
const built = pathToFileURL(
  join(import.meta.dirname, '..', 'dist', 'backends', 'importOptional.js'),
).href;
const root = mkdtempSync(join(tmpdir(), 'shardline-import-optional-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

describe('importOptional', () => {
  it("finds an app's optional dependency when the app runs through a symlinked bin, as npm installs CLIs", () => {
    // <prefix>/lib/node_modules/app/{dist/cli.mjs, node_modules/optional-dep} and
    // <prefix>/bin/app -> ../lib/node_modules/app/dist/cli.mjs: npm's global layout.
    const app = join(root, 'lib', 'node_modules', 'app');
    mkdirSync(join(app, 'dist'), { recursive: true });
    mkdirSync(join(app, 'node_modules', 'optional-dep'), { recursive: true });
    writeFileSync(
      join(app, 'node_modules', 'optional-dep', 'package.json'),
      JSON.stringify({ name: 'optional-dep', version: '1.0.0', main: 'index.js' }),
    );
    writeFileSync(join(app, 'node_modules', 'optional-dep', 'index.js'), 'exports.found = true;\n');
    writeFileSync(
      join(app, 'dist', 'cli.mjs'),
      `import { importOptional } from ${JSON.stringify(built)};\n` +
        "const m = await importOptional('optional-dep');\n" +
        'console.log(JSON.stringify({ found: m.found ?? m.default?.found }));\n',
    );
    mkdirSync(join(root, 'bin'));
    symlinkSync(
      join('..', 'lib', 'node_modules', 'app', 'dist', 'cli.mjs'),
      join(root, 'bin', 'app'),
    );
    // Run from elsewhere, so the working directory cannot be what finds it.
    const out = execFileSync(process.execPath, [join(root, 'bin', 'app')], {
      cwd: tmpdir(),
      encoding: 'utf8',
    });
    expect(JSON.parse(out)).toEqual({ found: true });
  });
});
