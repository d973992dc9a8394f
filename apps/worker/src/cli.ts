#!/usr/bin/env node
/**
 * shardline-worker: joins a coordinator and computes gradients on this machine.
 */
import { tuneHeapForStreaming } from '@shardline/core/heap';
import { runWorkerCli } from './program.js';

// At startup, before any training: every step streams weights in and a gradient out as short-lived
// buffers, and V8's default heap limits would collect the whole heap mid-exchange (see heap.ts).
tuneHeapForStreaming();

process.exitCode = await runWorkerCli(process.argv, {
  stdout: process.stdout,
  stderr: process.stderr,
});
