#!/usr/bin/env node
/**
 * shardline-worker: joins a coordinator and computes gradients on this machine.
 */
import { runWorkerCli } from './program.js';

process.exitCode = await runWorkerCli(process.argv, {
  stdout: process.stdout,
  stderr: process.stderr,
});
