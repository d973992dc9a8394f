#!/usr/bin/env node
/**
 * shardline-coordinator: the command line of the Shardline coordinator.
 */
import { runCli } from './program.js';

process.exitCode = await runCli(process.argv, { stdout: process.stdout, stderr: process.stderr });
