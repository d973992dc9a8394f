import { existsSync, readdirSync } from 'node:fs';
import { defaultServerConditions } from 'vite';
import { defineConfig } from 'vitest/config';

// Tests run against TypeScript source, not dist/: every workspace package exports a private
// `@shardline/source` condition pointing at src/, switched on here and nowhere else.
const conditions = ['@shardline/source', ...defaultServerConditions];

// packages/* and apps/* are the workspace; tests/* hold checks across packages (publishing,
// deployment files) that belong to no single one.
const projectDirs = ['packages', 'apps', 'tests'].flatMap((group) =>
  (existsSync(group) ? readdirSync(group, { withFileTypes: true }) : [])
    .filter((entry) => entry.isDirectory())
    .map((entry) => `${group}/${entry.name}`),
);

export default defineConfig({
  resolve: { conditions },
  ssr: { resolve: { conditions, externalConditions: conditions } },
  test: {
    // Real data, real processes and real training: generous but bounded.
    testTimeout: 120_000,
    hookTimeout: 120_000,
    // Two cores: run test files one after another so timing-sensitive and CPU-heavy
    // tests do not starve each other.
    fileParallelism: false,
    projects: projectDirs.map((root) => ({
      extends: true,
      test: { name: root.split('/')[1]!, root, include: ['test/**/*.test.ts'] },
    })),
  },
});
