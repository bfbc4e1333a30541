// Ticket reconnect: an unmodified automerge-repo 2.5.6 client connected with `?ticket=` keeps working
// after its socket drops. Its automatic reconnect presents the same URL (the same ticket) with the
// same peerId, and the server binds a ticket to the first peerId that joins with it.
//
// Usage: node tests/js/auth.mjs <ws://...?ticket=A> <ws://...?ticket=B>
// Driven by tests/tests/js_auth.rs. Runner protocol: the script prints `DROP` and waits for a line
// `DROPPED` (the runner has cut every connection of client A while the server keeps running), then
// `RESTART` and waits for `RESTARTED` (the runner restarted the server on the same port: the
// binding is forgotten, and the first join after it binds the ticket again).
// Output: `ok NAME` or `FAIL NAME: reason` per step on stdout, diagnostics on stderr; exit 0 only
// if everything passed.

import { Repo } from "@automerge/automerge-repo"
import { WebSocketClientAdapter } from "@automerge/automerge-repo-network-websocket"
import readline from "node:readline"

const STEP_MS = 15_000
const RETRY_MS = 200

// The 2.5.6 adapter rethrows some socket errors (ECONNRESET when a connection is cut) from an event
// listener; the steps below still assert their outcome.
process.on("uncaughtException", e => console.error("[auth] uncaught exception (ignored):", e?.message ?? e))
process.on("unhandledRejection", e => console.error("[auth] unhandled rejection (ignored):", e?.message ?? e))

const [urlA, urlB] = process.argv.slice(2)
if (!urlA?.includes("ticket=") || !urlB?.includes("ticket=")) {
  console.error("usage: node auth.mjs ws://HOST:PORT/?ticket=A ws://HOST:PORT/?ticket=B")
  process.exit(2)
}

const sleep = ms => new Promise(r => setTimeout(r, ms))
async function waitFor(what, pred, ms = STEP_MS) {
  const deadline = Date.now() + ms
  for (;;) {
    try { if (await pred()) return } catch { /* not yet */ }
    if (Date.now() > deadline) throw new Error(`timeout after ${ms} ms: ${what}`)
    await sleep(20)
  }
}
const sameSet = (a, b) => a.length === b.length && [...a].sort().join() === [...b].sort().join()

const stdin = readline.createInterface({ input: process.stdin })[Symbol.asyncIterator]()
async function runner(request, answer) {
  console.log(request)
  const { value, done } = await stdin.next()
  if (done || value.trim() !== answer) throw new Error(`runner answered ${JSON.stringify(value)} to ${request}`)
}

/** The server acknowledged the handle's heads (it reported them back for our document). */
async function acked(repo, handle, what) {
  await waitFor(`${what}: connected`, () => repo.peers.length > 0)
  const sid = await repo.getStorageIdOfPeer(repo.peers[0])
  await waitFor(`${what}: server acknowledged`, () => {
    const last = handle.getSyncInfo(sid)?.lastHeads
    return last && sameSet(last, handle.heads())
  })
}

const repoA = new Repo({ network: [new WebSocketClientAdapter(urlA, RETRY_MS)], peerId: "js-ticket-a" })
const repoB = new Repo({ network: [new WebSocketClientAdapter(urlB, RETRY_MS)], peerId: "js-ticket-b" })

let failed = false
async function check(name, f) {
  try {
    await f()
    console.log(`ok ${name}`)
  } catch (e) {
    failed = true
    console.log(`FAIL ${name}: ${e?.message ?? e}`)
    throw e
  }
}

try {
  const handle = repoA.create({ count: 1 })
  let hb
  await check("ticket-connect", async () => {
    await acked(repoA, handle, "A's document")
    await waitFor("B connected", () => repoB.peers.length > 0)
    hb = await repoB.find(handle.url)
    await waitFor("B sees count 1", () => hb.doc()?.count === 1)
  })

  await runner("DROP", "DROPPED")
  await check("reconnect-after-drop", async () => {
    handle.change(d => { d.count = 2 })
    await waitFor("B sees A's edit made after the drop", () => hb.doc()?.count === 2)
    await acked(repoA, handle, "A's edit after the drop")
  })

  await runner("RESTART", "RESTARTED")
  await check("reconnect-after-restart", async () => {
    handle.change(d => { d.count = 3 })
    await waitFor("B sees A's edit made after the restart", () => hb.doc()?.count === 3)
    await acked(repoA, handle, "A's edit after the restart")
  })
} catch (e) {
  failed = true
  console.error("[auth]", e?.stack ?? e)
} finally {
  await Promise.race([Promise.all([repoA.shutdown(), repoB.shutdown()]), sleep(2000)])
}
process.exit(failed ? 1 : 0)
