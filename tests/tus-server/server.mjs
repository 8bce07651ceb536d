// A real tus 1.0 server for Ferry's end-to-end tests: @tus/server with
// @tus/file-store, pinned in package.json and package-lock.json.
//
//   TUS_DIR=DIR [TUS_PORT=N] node server.mjs
//
// Listens on 127.0.0.1 on port TUS_PORT (default: a free one) and prints one JSON line per event on
// stdout: first {"event":"listening","port":N}, then one {"event":"request"}
// per answered request (method, url, the request's Upload-Offset and
// Content-Length, the status and the answer's Upload-Offset), and
// {"event":"finish"} / {"event":"terminate"} from the server's own events.
//
// TUS_REPLY=digest makes the last PATCH answer 200 with a JSON body
// ({"id", "size", "sha256"}) and a Repr-Digest header, as a deployment's
// onUploadFinish hook would; TUS_REPLY=wrong-digest reports the digest of
// other bytes.
//
// TUS_CHECKSUM=sha1 adds the checksum extension in front of the server, as a
// proxy would: OPTIONS offers `checksum` with `sha1`, and a PATCH with an
// Upload-Checksum is read whole and checked before the server sees it (460
// when it does not match). TUS_CHECKSUM=sha1-damage-once damages the first
// checked PATCH's bytes on arrival, so its check fails once.

import http from 'node:http';
import { Readable } from 'node:stream';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { Server, EVENTS } from '@tus/server';
import { FileStore } from '@tus/file-store';

const directory = process.env.TUS_DIR;
if (!directory) {
  console.error('TUS_DIR is not set');
  process.exit(2);
}
const reply = process.env.TUS_REPLY || '';
const log = (event) => process.stdout.write(JSON.stringify(event) + '\n');

function sha256(file) {
  return new Promise((resolve, reject) => {
    const hash = crypto.createHash('sha256');
    fs.createReadStream(file)
      .on('data', (chunk) => hash.update(chunk))
      .on('error', reject)
      .on('end', () => resolve(hash.digest()));
  });
}

const options = {
  path: '/files',
  datastore: new FileStore({ directory }),
};
if (reply === 'digest' || reply === 'wrong-digest') {
  options.onUploadFinish = async (_req, upload) => {
    const digest =
      reply === 'digest'
        ? await sha256(path.join(directory, upload.id))
        : crypto.createHash('sha256').update('other bytes').digest();
    return {
      status_code: 200,
      headers: {
        'Repr-Digest': `sha-256=:${digest.toString('base64')}:`,
        'Content-Type': 'application/json',
      },
      body: JSON.stringify({ id: upload.id, size: upload.size, sha256: digest.toString('hex') }),
    };
  };
}
// Headers as Node's writeHead may get them: flat [k, v, ...], pairs, a
// Headers object or a plain object; as {lower-case name: value}.
function headerObject(headers) {
  let pairs;
  if (Array.isArray(headers)) {
    pairs = [];
    if (headers.every((h) => Array.isArray(h))) pairs = headers;
    else for (let i = 0; i + 1 < headers.length; i += 2) pairs.push([headers[i], headers[i + 1]]);
  } else if (typeof headers.entries === 'function') {
    pairs = [...headers.entries()];
  } else {
    pairs = Object.entries(headers);
  }
  return Object.fromEntries(pairs.map(([k, v]) => [String(k).toLowerCase(), v]));
}

const tus = new Server(options);
tus.on(EVENTS.POST_FINISH, (_req, _res, upload) => log({ event: 'finish', id: upload.id, size: upload.size }));
tus.on(EVENTS.POST_TERMINATE, (_req, _res, id) => log({ event: 'terminate', id }));

const checksum = process.env.TUS_CHECKSUM || '';
let damage = checksum === 'sha1-damage-once';

// The PATCH's body read whole, then checked against its Upload-Checksum;
// the request the server then gets is the same one, replayed from memory.
async function checked(req, res) {
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  const body = Buffer.concat(chunks);
  if (damage && body.length > 0) {
    body[0] ^= 0xff;
    damage = false;
  }
  const [algorithm, expected] = String(req.headers['upload-checksum']).split(' ');
  const actual = crypto.createHash('sha1').update(body).digest('base64');
  if (algorithm !== 'sha1' || actual !== expected) {
    res.writeHead(460, { 'Tus-Resumable': '1.0.0', 'Content-Length': 0 });
    res.end();
    return null;
  }
  const replay = Readable.from([body]);
  for (const key of ['headers', 'rawHeaders', 'method', 'url', 'httpVersion', 'httpVersionMajor', 'httpVersionMinor', 'socket', 'connection']) {
    replay[key] = req[key];
  }
  replay.headers = { ...req.headers, 'content-length': String(body.length) };
  delete replay.headers['transfer-encoding'];
  return replay;
}

const server = http.createServer(async (req, res) => {
  // The answer's headers, however the server writes them.
  let answered = {};
  const writeHead = res.writeHead.bind(res);
  res.writeHead = (status, ...rest) => {
    answered = headerObject(rest.find((r) => r && typeof r === 'object') ?? {});
    if (checksum && req.method === 'OPTIONS') {
      const extensions = answered['tus-extension'] ? `${answered['tus-extension']},checksum` : 'checksum';
      const headers = { ...answered, 'tus-extension': extensions, 'tus-checksum-algorithm': 'sha1' };
      answered = headers;
      return writeHead(status, headers);
    }
    return writeHead(status, ...rest);
  };
  res.on('finish', () =>
    log({
      event: 'request',
      method: req.method,
      url: req.url,
      upload_offset: req.headers['upload-offset'] ?? null,
      content_length: req.headers['content-length'] ?? null,
      status: res.statusCode,
      answer_offset: res.getHeader('upload-offset') ?? answered['upload-offset'] ?? null,
    }),
  );
  if (checksum && req.method === 'PATCH' && req.headers['upload-checksum']) {
    const replay = await checked(req, res);
    if (replay) tus.handle(replay, res);
    return;
  }
  tus.handle(req, res);
});
server.listen(Number(process.env.TUS_PORT || 0), '127.0.0.1', () => log({ event: 'listening', port: server.address().port }));
for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => server.close(() => process.exit(0)));
}
