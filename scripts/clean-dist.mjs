#!/usr/bin/env node
/**
 * Removes dist/ of the package in the working directory. Each package's `build` runs it before
 * tsc, because tsc never deletes the output of a source file that was renamed or removed, and
 * `files: ["dist"]` would publish that stale file. (A shell `rm -rf` would not run on Windows.)
 */
import { rmSync } from 'node:fs';

rmSync('dist', { recursive: true, force: true });
