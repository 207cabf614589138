// The peer of bench.userpath: the same campaign's sends through BullMQ, the queue the seed recommends.
//
//     node bench/bullmq/worker.js --redis-port 6379 --graph http://127.0.0.1:5005 --token T
//                                 [--recipients 2000] [--rate 80] [--concurrency 16]
//
// One queue on the Redis at 127.0.0.1:<redis-port>; every recipient one job (added in bulk), each job one
// POST of the same template message the product sends to the Graph API fake; one worker whose limiter
// (BullMQ's own, `{max: rate, duration: 1000}`) keeps the rate. A refused send (an error answer, such
// as 130429) fails its job, which BullMQ retries up to 5 times, 200 ms apart. When every job is done it
// prints one JSON line: {"started_at", "finished_at", "completed", "failed"} (epoch seconds); the
// benchmark counts the figures at the fake.
'use strict'

const { Queue, Worker } = require('bullmq')

function option (name, fallback) {
  const at = process.argv.indexOf('--' + name)
  return at > 0 ? process.argv[at + 1] : fallback
}

const connection = { host: '127.0.0.1', port: Number(option('redis-port', 6379)), maxRetriesPerRequest: null }
const graph = option('graph')
const token = option('token', '')
const recipients = Number(option('recipients', 2000))
const rate = Number(option('rate', 80))
const concurrency = Number(option('concurrency', 16))
const phoneNumberId = option('phone-number-id', '1234567890')
const name = 'sends-' + process.pid

async function send (job) {
  const { phone, variable, callback } = job.data
  const response = await fetch(`${graph}/v23.0/${phoneNumberId}/messages`, {
    method: 'POST',
    headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/json' },
    body: JSON.stringify({
      messaging_product: 'whatsapp', recipient_type: 'individual', to: phone, type: 'template',
      template: { name: 'bench_offer', language: { code: 'en_US' },
        components: [{ type: 'body', parameters: [{ type: 'text', text: variable }] }] },
      biz_opaque_callback_data: callback,
    }),
  })
  const body = await response.json()
  if (response.status !== 200) throw new Error(`Graph error ${(body.error || {}).code}`)
  return body.messages[0].id
}

async function main () {
  const queue = new Queue(name, { connection })
  const jobs = []
  for (let n = 0; n < recipients; n++) {
    jobs.push({ name: 'send', data: { phone: '9198' + String(n).padStart(8, '0'), variable: `Customer ${n}`,
      callback: `bullmq:0:${n}` }, opts: { attempts: 5, backoff: { type: 'fixed', delay: 200 },
      removeOnComplete: true } })
  }
  for (let at = 0; at < jobs.length; at += 500) await queue.addBulk(jobs.slice(at, at + 500))
  let completed = 0, failed = 0
  const startedAt = Date.now() / 1000
  await new Promise((resolve) => {
    const worker = new Worker(name, send, { connection, concurrency, limiter: { max: rate, duration: 1000 } })
    const settle = () => { if (completed + failed === recipients) resolve(worker.close()) }
    worker.on('completed', () => { completed++; settle() })
    worker.on('failed', (job) => { if (job.attemptsMade >= job.opts.attempts) { failed++; settle() } })
  })
  const finishedAt = Date.now() / 1000
  await queue.obliterate({ force: true })
  await queue.close()
  console.log(JSON.stringify({ started_at: startedAt, finished_at: finishedAt, completed, failed }))
}

main().catch((error) => { console.error(error); process.exit(1) })
