// JS interop suite: unmodified @automerge/automerge-repo 2.5.6 clients against a sync server.
//
// Usage:
//   node tests/js/interop.mjs ws://127.0.0.1:PORT [all|SCENARIO...] [flags]
//   node tests/js/interop.mjs ws://127.0.0.1:PORT create-json ['{"json":"content"}']
//   node tests/js/interop.mjs ws://127.0.0.1:PORT find-json automerge:...
//
// Flags:
//   --reference            the server is the reference JS sync server: skip the checks where it is
//                          known to differ from driftless (marked "skip ... (reference server)")
//   --no-restart           skip the restart scenario (no harness to restart the server)
//   --max-message-bytes N  the server's configured maximum message size (also env
//                          DRIFTLESS_MAX_MESSAGE_BYTES); without it bad-oversized is skipped
//
// Output on stdout: one line per scenario, `ok NAME`, `skip NAME (...)` or `FAIL NAME: reason`.
// Diagnostics go to stderr. Exit code 0 only if nothing failed.
//
// Restart protocol (scenario `restart`): the script prints `RESTART_SERVER_STOP` and waits for a
// line `STOPPED` on stdin; later it prints `RESTART_SERVER_START` and waits for `STARTED`. The
// harness must restart the server on the same port with the same data directory.

import { Repo, generateAutomergeUrl, parseAutomergeUrl } from "@automerge/automerge-repo"
import { WebSocketClientAdapter } from "@automerge/automerge-repo-network-websocket"
import { NodeFSStorageAdapter } from "@automerge/automerge-repo-storage-nodefs"
import * as Automerge from "@automerge/automerge"
import { Encoder, decode as cborDecode } from "cbor-x"
import WebSocket from "ws"
import fs from "node:fs"
import os from "node:os"
import path from "node:path"
import readline from "node:readline"
import crypto from "node:crypto"

const STEP_MS = 10_000
const RETRY_MS = 500
const cbor = new Encoder({ tagUint8Array: false, useRecords: false })

// The 2.5.6 client adapter rethrows socket errors other than ECONNREFUSED from an event listener
// (e.g. ECONNRESET while the server restarts). Do not let that kill the whole suite; the scenarios
// still assert their outcome.
process.on("uncaughtException", e => console.error("[interop] uncaught exception (ignored):", e?.stack ?? e))
process.on("unhandledRejection", e => console.error("[interop] unhandled rejection (ignored):", e?.stack ?? e))

// ---------------------------------------------------------------------------------------------
// Arguments

const argv = process.argv.slice(2)
const flags = { reference: false, noRestart: false, maxMessageBytes: undefined }
const positional = []
for (let i = 0; i < argv.length; i++) {
  const a = argv[i]
  if (a === "--reference") flags.reference = true
  else if (a === "--no-restart") flags.noRestart = true
  else if (a === "--max-message-bytes") flags.maxMessageBytes = Number(argv[++i])
  else if (a.startsWith("--max-message-bytes=")) flags.maxMessageBytes = Number(a.split("=")[1])
  else positional.push(a)
}
if (flags.maxMessageBytes === undefined && process.env.DRIFTLESS_MAX_MESSAGE_BYTES) {
  flags.maxMessageBytes = Number(process.env.DRIFTLESS_MAX_MESSAGE_BYTES)
}
const [URL, ...rest] = positional
if (!URL || !/^wss?:\/\//.test(URL)) {
  console.error("usage: node interop.mjs ws://HOST:PORT [all|SCENARIO...|create-json [JSON]|find-json URL] [--reference] [--no-restart] [--max-message-bytes N]")
  process.exit(2)
}

// ---------------------------------------------------------------------------------------------
// Helpers

const log = (...a) => console.error("[interop]", ...a)
const sleep = ms => new Promise(r => setTimeout(r, ms))
const rid = () => crypto.randomBytes(4).toString("hex")

class SkipError extends Error {}
const skip = why => { throw new SkipError(why) }

/** Await `p`, failing with `what` after `ms`. */
function step(what, p, ms = STEP_MS) {
  let t
  const timeout = new Promise((_, rej) => { t = setTimeout(() => rej(new Error(`timeout after ${ms} ms: ${what}`)), ms) })
  return Promise.race([Promise.resolve(p), timeout]).finally(() => clearTimeout(t))
}

/** Poll `pred` until it returns truthy; fail with `what` after `ms`. */
async function waitFor(what, pred, ms = STEP_MS, every = 20) {
  const deadline = Date.now() + ms
  let lastErr
  for (;;) {
    try {
      const v = await pred()
      if (v) return v
    } catch (e) { lastErr = e }
    if (Date.now() > deadline) throw new Error(`timeout after ${ms} ms: ${what}${lastErr ? ` (last error: ${lastErr.message})` : ""}`)
    await sleep(every)
  }
}

function assert(cond, msg) { if (!cond) throw new Error(`assertion failed: ${msg}`) }
const json = v => JSON.stringify(v)
/** JSON with object keys sorted (automerge returns map keys in its own order). */
const canon = v => JSON.stringify(v, (_, x) => x && typeof x === "object" && !Array.isArray(x)
  ? Object.fromEntries(Object.keys(x).sort().map(k => [k, x[k]])) : x)
const sameJson = (a, b) => canon(a) === canon(b)
const sameSet = (a, b) => a.length === b.length && [...a].sort().join() === [...b].sort().join()

// Everything a scenario opens is registered here and torn down after it.
let cleanups = []
const onCleanup = f => cleanups.push(f)
async function runCleanups() {
  const cs = cleanups.reverse()
  cleanups = []
  for (const c of cs) { try { await c() } catch (e) { log("cleanup error:", e?.message ?? e) } }
}

function tmpDir(prefix) {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), `interop-${prefix}-`))
  onCleanup(() => fs.rmSync(d, { recursive: true, force: true }))
  return d
}

/** A repo client. `storage: true` gives it nodefs storage in a temp dir (so it advertises a storageId). */
function client(name, { storage = false } = {}) {
  const peerId = `interop-${name}-${rid()}`
  const repo = new Repo({
    network: [new WebSocketClientAdapter(URL, RETRY_MS)],
    storage: storage ? new NodeFSStorageAdapter(tmpDir(name)) : undefined,
    peerId,
  })
  let shut = false
  repo.shutdownOnce = async () => { if (!shut) { shut = true; await repo.shutdown() } }
  onCleanup(() => repo.shutdownOnce())
  return repo
}

/** Wait until `repo` has a connected peer (the server); returns its peerId. */
const connected = (repo, what = "client connected to server") => waitFor(what, () => repo.peers[0])

/** The server's storageId as advertised in its `peer` message. */
async function serverStorageId(repo) {
  await connected(repo)
  const sid = await waitFor("server advertised a storageId", () => repo.getStorageIdOfPeer(repo.peers[0]))
  assert(typeof sid === "string", `server storageId is a string (got ${json(sid)})`)
  return sid
}

/** Wait until the server has acknowledged the handle's current heads. */
async function acked(repo, handle, what = "server acknowledged the document") {
  const sid = await serverStorageId(repo)
  await waitFor(`${what} (lastHeads for ${sid} == heads)`, () => {
    const last = handle.getSyncInfo(sid)?.lastHeads
    return last && sameSet(last, handle.heads())
  })
  return sid
}

/** Resolves with the first `change` event payload whose doc satisfies `pred`. */
function changeWhere(handle, pred) {
  return new Promise(resolve => {
    const f = payload => { if (pred(payload.doc)) { handle.off("change", f); resolve(payload) } }
    handle.on("change", f)
  })
}

// --- raw WebSocket peer ---------------------------------------------------------------------

/** Opens a raw ws connection; collects decoded frames and records the close. */
async function raw(name) {
  const ws = new WebSocket(URL)
  const r = {
    ws,
    peerId: `interop-raw-${name}-${rid()}`,
    frames: [],
    textFrames: 0,
    closed: false,
    closeInfo: undefined,
    waiters: [],
  }
  r.closedPromise = new Promise(res => ws.on("close", (code, reason) => {
    r.closed = true
    r.closeInfo = { code, reason: reason.toString() }
    res(r.closeInfo)
    r.waiters.forEach(w => w())
  }))
  ws.on("error", e => log(`raw ${name} socket error:`, e.message))
  ws.on("message", (data, isBinary) => {
    if (!isBinary) { r.textFrames++; log(`raw ${name}: server sent a TEXT frame: ${data}`); return }
    let msg
    try { msg = cborDecode(data) } catch (e) { msg = { __undecodable: e.message, bytes: data.length } }
    r.frames.push(msg)
    r.waiters.forEach(w => w())
  })
  onCleanup(() => { if (!r.closed) ws.terminate() })
  await step(`raw ${name} websocket open`, new Promise((res, rej) => { ws.once("open", res); ws.once("error", rej) }))
  r.send = obj => ws.send(cbor.encode(obj))
  /** Next frame matching pred (default: any) since index `from`. */
  r.nextFrame = (what, pred = () => true, ms = STEP_MS) => waitFor(what, () => r.frames.find(pred), ms, 5)
  r.join = (extra = {}) => r.send({
    type: "join",
    senderId: r.peerId,
    peerMetadata: { storageId: undefined, isEphemeral: true },
    supportedProtocolVersions: ["1"],
    ...extra,
  })
  r.handshake = async () => {
    r.join()
    const peer = await r.nextFrame(`raw ${name}: peer reply to join`, f => f.type === "peer", 1000)
    return peer
  }
  r.expectClosed = (what, ms = STEP_MS) => step(`${what}: server closes the socket`, r.closedPromise, ms)
  /** Asserts the socket is still open after `ms`, then proves it is served with a `request`. */
  r.expectStillServed = async (what, documentId, serverPeerId, ms = 500) => {
    await sleep(ms)
    assert(!r.closed, `${what}: socket must stay open (closed with ${json(r.closeInfo)})`)
    const before = r.frames.length
    r.send({ type: "request", senderId: r.peerId, targetId: serverPeerId, documentId, data: syncRequestBytes() })
    await waitFor(`${what}: server still answers a request on this socket`,
      () => r.frames.slice(before).find(f => f.documentId === documentId && (f.type === "sync" || f.type === "doc-unavailable")))
  }
  return r
}

/** The bytes of a first sync message from an empty document (what a `request` carries). */
function syncRequestBytes() {
  const [, msg] = Automerge.generateSyncMessage(Automerge.init(), Automerge.initSyncState())
  return msg
}

/** A repo pair syncing a doc: A writes, B must see each write. Used as the control in bad-* scenarios. */
async function controlPair(name) {
  const a = client(`${name}-ctl-a`, { storage: true })
  const b = client(`${name}-ctl-b`)
  const ha = a.create({ n: 0 })
  await acked(a, ha, "control doc acknowledged")
  await connected(b)
  const hb = await step("control client B finds the doc", b.find(ha.url))
  let disconnects = 0
  a.networkSubsystem.on("peer-disconnected", () => disconnects++)
  b.networkSubsystem.on("peer-disconnected", () => disconnects++)
  const ctl = {
    a, b, ha, hb,
    serverPeerId: a.peers[0],
    documentId: ha.documentId,
    async check(what) {
      const n = ha.doc().n + 1
      const seen = changeWhere(hb, d => d.n === n)
      ha.change(d => { d.n = n })
      await step(`${what}: control client still syncing (edit ${n} reaches B)`, seen)
      await acked(a, ha, `${what}: control edit ${n} acknowledged`)
      assert(disconnects === 0, `${what}: control clients were disconnected ${disconnects} time(s)`)
    },
  }
  await ctl.check("before")
  return ctl
}

// --- stdin line protocol ----------------------------------------------------------------------

let stdinLines
function stdinLine(expected, ms = 60_000) {
  if (!stdinLines) {
    stdinLines = { queue: [], waiters: [] }
    const rl = readline.createInterface({ input: process.stdin })
    rl.on("line", l => { stdinLines.queue.push(l.trim()); stdinLines.waiters.forEach(w => w()) })
  }
  return waitFor(`line "${expected}" on stdin`, () => {
    const i = stdinLines.queue.indexOf(expected)
    if (i >= 0) { stdinLines.queue.splice(i, 1); return true }
  }, ms)
}

// ---------------------------------------------------------------------------------------------
// Scenarios

const scenarios = {}

scenarios.handshake = async () => {
  const r = await raw("handshake")
  const t0 = Date.now()
  r.join()
  const first = await r.nextFrame("peer reply within 1 s", () => true, 1000)
  log(`handshake: first frame after ${Date.now() - t0} ms: ${json(first)}`)
  assert(first.type === "peer", `first frame is a peer message (got ${json(first)})`)
  assert(first.targetId === r.peerId, `peer.targetId === our senderId (got ${json(first.targetId)})`)
  assert(first.selectedProtocolVersion === "1", `selectedProtocolVersion "1" (got ${json(first.selectedProtocolVersion)})`)
  assert(typeof first.senderId === "string" && first.senderId.length > 0, `string senderId (got ${json(first.senderId)})`)
  assert(first.peerMetadata && first.peerMetadata.isEphemeral === false, `peerMetadata.isEphemeral === false (got ${json(first.peerMetadata)})`)
  assert(typeof first.peerMetadata.storageId === "string" && first.peerMetadata.storageId.length > 0,
    `peerMetadata.storageId is a string (got ${json(first.peerMetadata.storageId)})`)
  await sleep(200)
  assert(r.frames.length === 1, `exactly one frame after join (got ${json(r.frames)})`)
  assert(r.textFrames === 0, "server sent no text frames")
  // A client reconnect sends `peerMetadata: {}`; and the server's storageId must be stable.
  const r2 = await raw("handshake-empty-meta")
  r2.join({ peerMetadata: {} })
  const p2 = await r2.nextFrame("peer reply to join with peerMetadata {}", f => f.type === "peer", 1000)
  assert(p2.targetId === r2.peerId, "second peer.targetId")
  assert(p2.senderId === first.senderId, `server peerId stable across connections (${json(first.senderId)} vs ${json(p2.senderId)})`)
  assert(p2.peerMetadata?.storageId === first.peerMetadata.storageId, "server storageId stable across connections")
}

scenarios["create-find"] = async () => {
  const a = client("create-a", { storage: true })
  const ha = a.create({ title: "t", items: [] })
  ha.change(d => { d.items.push("one") })
  await acked(a, ha)
  const b = client("create-b")
  await connected(b)
  const hb = await step("B finds the doc by URL", b.find(ha.url))
  assert(sameJson(hb.doc(), { title: "t", items: ["one"] }), `B sees the content (got ${json(hb.doc())})`)
  assert(sameSet(hb.heads(), ha.heads()), "B has the same heads as A")
}

scenarios["live-edits"] = async () => {
  const a = client("live-a", { storage: true })
  const ha = a.create({ items: [] })
  await acked(a, ha)
  const b = client("live-b")
  await connected(b)
  const hb = await step("B finds the doc", b.find(ha.url))
  const bSees = changeWhere(hb, d => d.items.includes("from-a"))
  ha.change(d => { d.items.push("from-a") })
  const evB = await step("B gets a change event with A's edit", bSees)
  assert(evB.doc.items.includes("from-a"), "B's change payload has A's edit")
  const aSees = changeWhere(ha, d => d.items.includes("from-b"))
  hb.change(d => { d.items.push("from-b") })
  const evA = await step("A gets a change event with B's edit", aSees)
  assert(json(evA.doc.items) === json(["from-a", "from-b"]), `A sees both edits in order (got ${json(evA.doc.items)})`)
  await waitFor("A and B converge", () => sameSet(ha.heads(), hb.heads()))
}

scenarios["find-after-authors-left"] = async () => {
  const a = client("left-a", { storage: true })
  const ha = a.create({ who: "a", items: ["x"] })
  ha.change(d => { d.items.push("y") })
  await acked(a, ha)
  const url = ha.url
  const heads = ha.heads()
  await a.shutdownOnce()
  await sleep(200)
  const c = client("left-c")
  await connected(c)
  const hc = await step("fresh client finds the doc after its author left", c.find(url))
  assert(sameJson(hc.doc(), { who: "a", items: ["x", "y"] }), `content (got ${json(hc.doc())})`)
  assert(sameSet(hc.heads(), heads), "same heads as the author had")
}

scenarios.unavailable = async () => {
  const b = client("unavail-b")
  await connected(b)
  const url = generateAutomergeUrl()
  const t0 = Date.now()
  let err
  try {
    const h = await step("find of an unknown doc settles", b.find(url), 2000)
    throw new Error(`find resolved instead of rejecting (state ${h.state})`)
  } catch (e) { err = e }
  const ms = Date.now() - t0
  assert(/unavailable/i.test(err.message), `rejects as unavailable (got: ${err.message})`)
  assert(ms < 2000, `rejected within 2 s (took ${ms} ms)`)
  log(`unavailable: rejected after ${ms} ms`)
}

scenarios["late-arrival"] = async () => {
  const b = client("late-b")
  await connected(b)
  const url = generateAutomergeUrl()
  const hb = await step("find with allowableStates [ready, unavailable] resolves",
    b.find(url, { allowableStates: ["ready", "unavailable"] }), 2000)
  assert(hb.state === "unavailable", `B's handle is unavailable at first (got ${hb.state})`)
  const a = client("late-a", { storage: true })
  await connected(a)
  const doc = Automerge.change(Automerge.init(), d => { d.late = "arrival"; d.n = 42 })
  const ha = a.import(Automerge.save(doc), { docId: parseAutomergeUrl(url).documentId })
  await step("B's handle becomes ready when A pushes the doc", hb.whenReady(["ready"]))
  await waitFor("B has the imported content", () => hb.doc()?.late === "arrival")
  assert(sameJson(hb.doc(), { late: "arrival", n: 42 }), `B content (got ${json(hb.doc())})`)
  await acked(a, ha)
}

scenarios["offline-merge"] = async () => {
  const a = client("offline-a", { storage: true })
  const ha = a.create({ items: [] })
  await acked(a, ha)
  const b = client("offline-b")
  await connected(b)
  const hb = await step("B finds the doc", b.find(ha.url))
  b.networkSubsystem.disconnect()
  await waitFor("B disconnected", () => b.peers.length === 0)
  ha.change(d => { d.items.push("a") })
  hb.change(d => { d.items.push("b") })
  await acked(a, ha, "A's offline-time edit acknowledged")
  b.networkSubsystem.reconnect() // this join carries peerMetadata {}
  await connected(b, "B reconnected")
  await waitFor("A and B converge on equal heads", () => sameSet(ha.heads(), hb.heads()))
  for (const [n, h] of [["A", ha], ["B", hb]]) {
    const items = h.doc().items
    assert(items.includes("a") && items.includes("b") && items.length === 2, `${n} has both edits (got ${json(items)})`)
  }
  assert(sameJson(ha.doc(), hb.doc()), "A and B have identical documents")
}

scenarios.ephemeral = async () => {
  const a = client("eph-a", { storage: true })
  const ha = a.create({ e: 1 })
  await acked(a, ha)
  const b = client("eph-b")
  await connected(b)
  const hb = await step("B finds the doc", b.find(ha.url))
  const aGot = []
  ha.on("ephemeral-message", m => aGot.push(m))
  const bGot = new Promise(res => hb.on("ephemeral-message", res))
  // Give the server a moment to register B as having the doc open.
  await sleep(100)
  ha.broadcast({ cursor: 1 })
  const m = await step("B gets A's ephemeral message", bGot)
  assert(m.senderId === a.peerId, `senderId is A's peerId (got ${json(m.senderId)}, A is ${a.peerId})`)
  assert(json(m.message) === json({ cursor: 1 }), `decoded message (got ${json(m.message)})`)
  await sleep(300)
  assert(aGot.length === 0, `A does not get its own message back (got ${json(aGot.map(x => x.message))})`)
}

scenarios.restart = async () => {
  if (flags.noRestart) skip("--no-restart")
  const a = client("restart-a", { storage: true })
  const ha = a.create({ items: ["before"] })
  const sid = await acked(a, ha, "doc acknowledged before the restart")
  const serverPeer = a.peers[0]
  console.log("RESTART_SERVER_STOP")
  await stdinLine("STOPPED")
  await waitFor("A notices the server went away", () => a.peers.length === 0)
  ha.change(d => { d.items.push("while-down") })
  console.log("RESTART_SERVER_START")
  await stdinLine("STARTED")
  await waitFor("A reconnects by itself", () => a.peers.length > 0, 15_000)
  // Clients key sync state by storageId, so only that must survive a restart (samod picks a new
  // random peerId per process; the JS server's is fixed).
  if (a.peers[0] !== serverPeer) log(`restart: server peerId changed (${serverPeer} -> ${a.peers[0]})`)
  const sid2 = await acked(a, ha, "A's edit made while the server was down is acknowledged after restart")
  assert(sid2 === sid, `server storageId stable across restart (${sid} vs ${sid2})`)
  const c = client("restart-c")
  await connected(c)
  const hc = await step("fresh client finds the doc after restart", c.find(ha.url))
  assert(json(hc.doc().items) === json(["before", "while-down"]), `fresh client sees all edits (got ${json(hc.doc())})`)
}

// --- bad input --------------------------------------------------------------------------------

scenarios["bad-random-bytes"] = async () => {
  const ctl = await controlPair("badbytes")
  const r = await raw("badbytes")
  await r.handshake()
  // 0xff is a CBOR "break" outside an indefinite-length item: never a valid CBOR message.
  r.ws.send(Buffer.concat([Buffer.from([0xff]), crypto.randomBytes(63)]))
  await r.expectClosed("random bytes")
  // Also before the handshake.
  const r2 = await raw("badbytes-prejoin")
  r2.ws.send(Buffer.concat([Buffer.from([0xff]), crypto.randomBytes(63)]))
  await r2.expectClosed("random bytes before join")
  await ctl.check("after random bytes")
}

scenarios["bad-text-frame"] = async () => {
  const ctl = await controlPair("badtext")
  const r = await raw("badtext")
  await r.handshake()
  r.ws.send(JSON.stringify({ type: "sync", senderId: r.peerId, documentId: ctl.documentId }))
  // (The reference server does not look at the frame kind: it closes only because this text is not CBOR.)
  await r.expectClosed("text frame")
  await ctl.check("after text frame")
}

scenarios["bad-unknown-type"] = async () => {
  const ctl = await controlPair("badtype")
  const r = await raw("badtype")
  const peer = await r.handshake()
  r.send({ type: "x-driftless-unknown", senderId: r.peerId, targetId: peer.senderId, documentId: ctl.documentId, data: new Uint8Array([1, 2, 3]) })
  await r.expectStillServed("unknown type", ctl.documentId, peer.senderId)
  await ctl.check("after unknown type")
}

scenarios["bad-protocol-version"] = async () => {
  const ctl = await controlPair("badver")
  const r = await raw("badver")
  r.join({ supportedProtocolVersions: ["2"] })
  const f = await r.nextFrame("reply to a join with only protocol version 2", () => true)
  assert(f.type === "error", `first reply is an error (got ${json(f)})`)
  assert(typeof f.message === "string", `error has a string message (got ${json(f)})`)
  log(`bad-protocol-version: error frame ${json(f)}`)
  await r.expectClosed("unsupported protocol version")
  assert(!r.frames.some(x => x.type === "peer"), "no peer message was sent")
  await ctl.check("after unsupported protocol version")
}

scenarios["bad-oversized"] = async () => {
  if (flags.reference) skip("reference server (no size limit)")
  const max = flags.maxMessageBytes
  if (!(max > 0)) skip("no --max-message-bytes / DRIFTLESS_MAX_MESSAGE_BYTES given")
  const ctl = await controlPair("badsize")
  // An unknown-type message is ignored by a correct server, so only its size can make it close.
  const frame = (r, peer, size) => {
    const base = { type: "x-driftless-padding", senderId: r.peerId, targetId: peer.senderId, pad: new Uint8Array(0) }
    let n = size - cbor.encode(base).length
    for (let i = 0; i < 3; i++) {
      const enc = cbor.encode({ ...base, pad: new Uint8Array(n) })
      if (enc.length === size) return enc
      n += size - enc.length
    }
    throw new Error(`could not build a frame of exactly ${size} bytes`)
  }
  const ok = await raw("atlimit")
  const okPeer = await ok.handshake()
  ok.ws.send(frame(ok, okPeer, max))
  await ok.expectStillServed(`frame of exactly max_message_bytes (${max})`, ctl.documentId, okPeer.senderId)
  const r = await raw("oversized")
  const peer = await r.handshake()
  r.ws.send(frame(r, peer, max + 1))
  const info = await r.expectClosed(`frame of max_message_bytes + 1 (${max + 1})`)
  log(`bad-oversized: closed with ${json(info)}`)
  await ctl.check("after oversized frame")
}

// ---------------------------------------------------------------------------------------------
// Helper modes for the samod interop test

async function createJson(content) {
  const a = client("create-json", { storage: true })
  const h = a.create(content)
  await acked(a, h)
  console.log(h.url)
}

async function findJson(url) {
  const b = client("find-json")
  await connected(b)
  const h = await step(`find ${url}`, b.find(url))
  console.log(JSON.stringify(h.doc()))
}

// ---------------------------------------------------------------------------------------------
// Main

async function main() {
  const [mode, ...args] = rest.length ? rest : ["all"]
  if (mode === "create-json") {
    try { await createJson(args[0] ? JSON.parse(args[0]) : { title: "from js", items: ["a", "b"], n: 7 }) }
    finally { await runCleanups() }
    return 0
  }
  if (mode === "find-json") {
    try { await findJson(args[0]) } finally { await runCleanups() }
    return 0
  }
  const names = mode === "all" ? Object.keys(scenarios) : [mode, ...args]
  for (const n of names) if (!scenarios[n]) { console.error(`unknown scenario ${n}; known: ${Object.keys(scenarios).join(", ")}`); return 2 }
  let failed = 0
  for (const name of names) {
    const t0 = Date.now()
    try {
      await step(`scenario ${name}`, scenarios[name](), 90_000)
      console.log(`ok ${name}`)
    } catch (e) {
      if (e instanceof SkipError) console.log(`skip ${name} (${e.message})`)
      else { failed++; console.log(`FAIL ${name}: ${e?.message ?? e}`); log(e?.stack) }
    }
    log(`${name} took ${Date.now() - t0} ms`)
    await runCleanups()
  }
  log(`${names.length - failed}/${names.length} scenarios did not fail`)
  return failed ? 1 : 0
}

main().then(
  code => process.exit(code),
  e => { console.log(`FAIL main: ${e?.stack ?? e}`); process.exit(1) },
)
