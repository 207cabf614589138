// dynalite, as its own `dynalite` command runs it, with two changes at its edge: each expression is
// parsed once per shape instead of on every call, and a client that goes away in the middle of sending
// a request (a SIGKILLed sender) no longer takes the server down.
//
//     node local/dynalite.js --host 127.0.0.1 --port 4567 [--path DIR] [...dynalite's options]
//
// dynalite parses every ConditionExpression, UpdateExpression, KeyConditionExpression, FilterExpression
// and ProjectionExpression with a generated PEG parser that backtracks over parentheses: the sender's
// claim condition, `((#0 = :0 AND (attribute_not_exists (#1) OR #1 <= :1)) OR (#0 = :2 AND #2 = :3))`,
// took 3.7 ms to parse, nearly all of what a conditional UpdateItem cost the server (python -m
// bench.stores). The sender sends the same few expressions with new values each time, so the parse is
// kept by its shape: the expression, its attribute names, and the type of each attribute value. A
// parse of that shape again reuses the tree, with the call's own values put where the first call's
// were. That is exact because the parsers look at a value only for its type (an operand's type,
// `list_append`, `+`, ADD, DELETE), which is in the key, and keep the value itself in the tree, with
// two exceptions, which are parsed every time: BETWEEN compares its bounds, and `attribute_type`
// checks that its second value names a type (tests/test_dynalite.py has a case of each). Only
// successful parses are kept: an expression that fails is parsed (and fails) every time, with
// dynalite's own message. The names and values an expression uses are ticked off the request's
// unused ones as the parser does (dynalite refuses a request that defines one it does not use).
// tests/test_storage.py checks that answers, errors included, equal stock dynalite's.

'use strict'

const KEPT_SHAPES = 10000
// Where a parser reads a value itself, not only its type: never kept.
const VALUES_READ = /between|attribute_type/i

function memoized (parse) {
  const shapes = new Map()
  return function (input, options) {
    const context = options && options.context
    if (!context || typeof input != 'string' || VALUES_READ.test(input)) return parse(input, options)
    const key = shapeOf(input, context)
    const kept = shapes.get(key)
    if (kept) {
      for (const token of kept.tokens) {
        if (context.unusedAttrNames) delete context.unusedAttrNames[token]
        if (context.unusedAttrVals) delete context.unusedAttrVals[token]
      }
      return copy(kept.tree, kept.slots, context.attrVals || {})
    }
    const tree = parse(input, options)
    if (tree && typeof tree == 'object') {
      if (shapes.size >= KEPT_SHAPES) shapes.clear()
      const slots = new Map()  // the first call's value objects → their placeholders
      for (const name of Object.keys(context.attrVals || {})) slots.set(context.attrVals[name], name)
      shapes.set(key, { tree: copy(tree, slots, null), slots: slots, tokens: input.match(/[#:][0-9a-zA-Z_]+/g) || [] })
    }
    return tree
  }
}

function shapeOf (input, context) {
  const values = context.attrVals || {}
  const types = Object.keys(values).sort().map(function (name) {
    const value = values[name]
    return name + '=' + (value && typeof value == 'object' ? Object.keys(value).sort().join('|') : typeof value)
  })
  return JSON.stringify([input, context.attrNames || null, types, !!context.isKeyCondition])
}

// A copy of a parse tree. Building the kept copy (`values` null), each value object of the request
// becomes a placeholder naming it; copying a kept tree out, each placeholder becomes the call's own
// value of that name. Everything else is plain arrays and objects made by the parser.
function copy (node, slots, values) {
  if (values === null && slots.has(node)) return { __keptValue: slots.get(node) }
  if (Array.isArray(node)) return node.map(function (item) { return copy(item, slots, values) })
  if (node && typeof node == 'object') {
    if (values !== null && Object.prototype.hasOwnProperty.call(node, '__keptValue')) return values[node.__keptValue]
    const out = Object.getPrototypeOf(node) === null ? Object.create(null) : {}
    for (const name of Object.keys(node)) out[name] = copy(node[name], slots, values)
    return out
  }
  return node
}

// dynalite rethrows an error of a request's stream (`req.on('error', function (err) { throw err })`),
// and a connection reset before the request's body was all read is one: the whole server exited,
// and every other client of the local stack with it (seen when `make demo` killed its sender). Such a
// request was never read, so nothing of it was applied: dropping it is what DynamoDB does. Any other
// uncaught error still ends the server, as before.
process.on('uncaughtException', function (error) {
  if (error && (error.code === 'ECONNRESET' || error.code === 'ECONNABORTED' || error.message === 'aborted')) return
  console.error(error)
  process.exit(1)
})

for (const name of ['conditionParser', 'updateParser', 'projectionParser']) {
  const parser = require('dynalite/db/' + name)
  parser.parse = memoized(parser.parse)
}

require('dynalite/cli.js')
