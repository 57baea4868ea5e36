#!/usr/bin/env node
// Nimbus runtime shim for Node.js function handlers (standard library only).
//
// Usage, in the function's code directory:
//
//     PORT=8080 node nimbus_shim.js FILE.func     # e.g. index.main -> ./index.js, exports.main
//
// The handler module (FILE.js, FILE.mjs or FILE.cjs; CommonJS or ES module) is loaded once, at
// start; every invocation then calls the same function in the same process, so a warm call costs
// no process start. The handler may be sync, async, or return a promise. The shim serves the
// Nimbus invoke protocol (docs/functions.md) on 127.0.0.1:$PORT (NIMBUS_HOST overrides it):
//
//     GET  /healthz  200 once the handler is loaded (the server only listens after that)
//     POST /invoke   the event JSON in, the handler's JSON result out (200); a handler exception
//                    is 200 with `x-nimbus-error: handler` and {"error": {type, message, traceback}}
//
// Anything else that goes wrong (bad request, unknown path) is a non-200 answer without
// `x-nimbus-error: handler`, so the engine can tell platform errors from handler errors.
//
// A handler file or function that is missing, or a module that throws while loading, ends the
// shim with exit status 1 and the reason (with the stack) on stderr. Bad usage exits 2.

'use strict';

const fs = require('fs');
const http = require('http');
const path = require('path');
const crypto = require('crypto');
const { pathToFileURL } = require('url');

const SHIM_FILE = __filename;
// Same rule as the engine's `--handler` check (crates/nimbus-functions/src/handler.rs).
const HANDLER_RE = /^([A-Za-z0-9_][A-Za-z0-9_-]*(?:\/[A-Za-z0-9_][A-Za-z0-9_-]*)*)\.([A-Za-z_][A-Za-z0-9_]*)$/;
const EXTENSIONS = ['.js', '.mjs', '.cjs'];
// Reported by getRemainingTimeInMillis() when the request carries no deadline.
const NO_DEADLINE_REMAINING_MS = 2 ** 31 - 1;

function fail(status, message) {
  process.stderr.write(`nimbus-shim: ${message}\n`);
  process.exit(status);
}

class Context {
  constructor({ requestId, functionName, functionVersion, memoryLimitInMB, deadlineMs }) {
    this.requestId = requestId;
    this.functionName = functionName;
    this.functionVersion = functionVersion;
    this.memoryLimitInMB = memoryLimitInMB;
    // Unix milliseconds, or null when the caller set no deadline.
    this.deadlineMs = deadlineMs;
  }

  getRemainingTimeInMillis() {
    if (this.deadlineMs === null) return NO_DEADLINE_REMAINING_MS;
    return Math.max(0, this.deadlineMs - Date.now());
  }
}

async function importModule(file) {
  if (file.endsWith('.mjs')) return import(pathToFileURL(file).href);
  try {
    return require(file);
  } catch (err) {
    // An ES module (`"type": "module"` in package.json) cannot be required in Node 20.
    if (err && err.code === 'ERR_REQUIRE_ESM') return import(pathToFileURL(file).href);
    throw err;
  }
}

async function loadHandler(spec) {
  const match = HANDLER_RE.exec(spec);
  if (!match) {
    fail(2, `invalid handler ${JSON.stringify(spec)}: expected FILE.func, e.g. index.main (file index.js, function main)`);
  }
  const [, filePart, funcName] = match;
  const codeDir = process.cwd();
  const base = path.join(codeDir, filePart);
  const file = EXTENSIONS.map((ext) => base + ext).find((candidate) => fs.existsSync(candidate));
  if (!file) {
    fail(1, `handler file ${base}.js not found (also tried .mjs, .cjs; handler ${JSON.stringify(spec)}, code directory ${codeDir})`);
  }
  let mod;
  try {
    mod = await importModule(file);
  } catch (err) {
    process.stderr.write(`nimbus-shim: loading handler file ${file} failed:\n${err && err.stack ? err.stack : String(err)}\n`);
    process.exit(1);
  }
  let func = mod ? mod[funcName] : undefined;
  if (func === undefined && mod && mod.default) func = mod.default[funcName];
  if (func === undefined) {
    fail(1, `handler function ${JSON.stringify(funcName)} not found in ${file} (handler ${JSON.stringify(spec)}; export it: exports.${funcName} = ...)`);
  }
  if (typeof func !== 'function') {
    fail(1, `handler ${JSON.stringify(funcName)} in ${file} is not a function`);
  }
  return func;
}

// The error's stack as lines, without the shim's own frames and Node internals.
function userTraceback(err) {
  if (!err || typeof err.stack !== 'string') return [];
  return err.stack
    .split('\n')
    .filter((line) => !line.includes(SHIM_FILE) && !line.includes('(node:internal/') && !line.includes(' node:internal/'));
}

function errorType(err) {
  if (err instanceof Error) {
    const ctor = err.constructor && err.constructor.name;
    // `class MyError extends Error {}` keeps name "Error"; its class name says more.
    if (err.name === 'Error' && ctor && ctor !== 'Error') return ctor;
    return err.name || ctor || 'Error';
  }
  return err === null ? 'null' : typeof err;
}

function handlerErrorBody(err) {
  const message = err instanceof Error ? err.message : (() => {
    try { return typeof err === 'string' ? err : JSON.stringify(err); } catch (_) { return String(err); }
  })();
  return JSON.stringify({ error: { type: errorType(err), message: String(message), traceback: userTraceback(err) } });
}

function platformErrorBody(type, message) {
  return JSON.stringify({ error: { type, message } });
}

function send(res, status, body, handlerError) {
  const headers = { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) };
  if (handlerError) headers['x-nimbus-error'] = 'handler';
  res.writeHead(status, headers);
  res.end(body);
}

function intHeader(req, name, fallback) {
  const value = req.headers[name];
  if (value === undefined || value === '') return fallback;
  if (!/^[0-9]+$/.test(value)) throw new Error(`header ${name} must be a non-negative integer, got ${JSON.stringify(value)}`);
  return Number(value);
}

function main() {
  const argv = process.argv.slice(2);
  if (argv.length !== 1) fail(2, 'usage: PORT=8080 node nimbus_shim.js FILE.func (run in the code directory)');
  const portText = process.env.PORT || '';
  const port = Number(portText);
  if (!/^[0-9]+$/.test(portText) || port <= 0 || port >= 65536) {
    fail(2, `PORT must be set to a TCP port number, got ${JSON.stringify(portText)}`);
  }
  const defaults = {
    functionName: process.env.NIMBUS_FUNCTION || process.env.NIMBUS_SERVICE || '',
    functionVersion: process.env.NIMBUS_VERSION || '',
    memoryLimitInMB: /^[0-9]+$/.test(process.env.NIMBUS_MEMORY_MB || '') ? Number(process.env.NIMBUS_MEMORY_MB) : 0,
  };

  loadHandler(argv[0]).then((handler) => {
    // One invocation at a time (an instance has concurrency 1): each waits for the previous.
    let previous = Promise.resolve();

    async function invoke(event, context) {
      try {
        const result = await handler(event, context);
        const body = JSON.stringify(result === undefined ? null : result);
        return { body: body === undefined ? 'null' : body, handlerError: false };
      } catch (err) {
        return { body: handlerErrorBody(err), handlerError: true };
      }
    }

    const server = http.createServer({ noDelay: true }, (req, res) => {
      const chunks = [];
      req.on('data', (chunk) => chunks.push(chunk));
      req.on('end', () => {
        if (req.method === 'GET' && req.url === '/healthz') {
          send(res, 200, '{"status":"ok"}', false);
          return;
        }
        if (req.method !== 'POST' || req.url !== '/invoke') {
          send(res, 404, platformErrorBody('NotFound', `no route for ${req.method} ${req.url}`), false);
          return;
        }
        const raw = Buffer.concat(chunks).toString('utf8');
        let event;
        try {
          event = raw.trim() === '' ? null : JSON.parse(raw);
        } catch (err) {
          send(res, 400, platformErrorBody('InvalidEvent', `the event is not JSON: ${err.message}`), false);
          return;
        }
        let context;
        try {
          const deadline = intHeader(req, 'x-nimbus-deadline-ms', null);
          context = new Context({
            requestId: req.headers['x-nimbus-request-id'] || crypto.randomUUID(),
            functionName: req.headers['x-nimbus-function'] || defaults.functionName,
            functionVersion: req.headers['x-nimbus-version'] || defaults.functionVersion,
            memoryLimitInMB: intHeader(req, 'x-nimbus-memory-mb', defaults.memoryLimitInMB),
            deadlineMs: deadline,
          });
        } catch (err) {
          send(res, 400, platformErrorBody('InvalidHeader', err.message), false);
          return;
        }
        const run = previous.then(() => invoke(event, context));
        previous = run;
        run.then(({ body, handlerError }) => {
          // The engine drops the connection of an invocation that timed out; skip the answer.
          if (!res.destroyed) send(res, 200, body, handlerError);
        });
      });
    });
    // Idle keep-alive connections stay open: the engine's pool closes them, which avoids the
    // race of reusing a connection the shim is just closing.
    server.keepAliveTimeout = 0;
    const host = process.env.NIMBUS_HOST || '127.0.0.1';
    server.on('error', (err) => fail(1, `cannot listen on ${host}:${port}: ${err.message}`));
    server.listen(port, host);
  });
}

main();
