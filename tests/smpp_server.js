#!/usr/bin/env node
// An SMSC for the end-to-end tests: the server of the npm `smpp` package
// (a third-party SMPP implementation, installed under tests/node by
// scripts/deps.sh), scripted from the command line, recording every PDU it
// receives as one JSON line.
//
// Usage: node tests/smpp_server.js --log FILE [--port N] [--system-id ID]
//          [--password PW] [--throttle N] [--queue-full N] [--nack N]
//          [--hang bind|submit] [--drop-after N] [--tls-key F --tls-cert F]
//          [--lifetime SECONDS] [--receipts STATE[@MS],...]
//
//   --port N          listen on 127.0.0.1:N (default 0: any free port)
//   --system-id/--password  the only credentials a bind_transmitter may use;
//                     others get ESME_RBINDFAIL
//   --throttle N      answer the first N submit_sm with ESME_RTHROTTLED
//   --queue-full N    then the next N with ESME_RMSGQFUL
//   --nack N          then the next N with generic_nack
//   --hang bind|submit  never answer that command
//   --drop-after N    close a session's connection after N accepted submit_sm
//   --receipts LIST   the k-th accepted submit_sm that asks for a receipt
//                     (registered_delivery & 1) gets, on its session, a
//                     deliver_sm receipt (esm_class 0x04, Appendix B text)
//                     with the k-th state of the comma-separated LIST
//                     (DELIVRD, UNDELIV, …), after MS milliseconds (default
//                     100); "-" or an exhausted list: no receipt. Logged as
//                     {"event": "receipt", "message_id", "stat"} when sent
//                     and {"event": "receipt_acked", …} when answered.
//
// Prints {"port": P} on stdout once listening. Each log line has "command",
// "session" (1, 2, … per connection) and "sequence_number"; binds add
// "system_id", "password_ok", "interface_version"; submit_sm adds the
// addresses, TON/NPI, esm_class, data_coding, registered_delivery,
// "short_message_hex", "udh_hex", "message_payload_hex" and "text" (the
// message as this package decodes it: GSM 03.38 for data_coding 0, UTF-16BE
// for 8). Connection events are logged as {"event": "connect" | "close"}.
'use strict';

const path = require('path');
const fs = require('fs');
const smpp = require(path.join(__dirname, 'node', 'node_modules', 'smpp'));

const args = {};
for (let i = 2; i < process.argv.length; i += 2) {
  args[process.argv[i].replace(/^--/, '')] = process.argv[i + 1];
}
const num = (k) => parseInt(args[k] || '0', 10);
const log = fs.openSync(args.log, 'a');
const record = (o) => fs.writeSync(log, JSON.stringify(o) + '\n');

let throttle = num('throttle');
let queueFull = num('queue-full');
let nack = num('nack');
let sessions = 0;
let messageId = 0;
const receipts = (args.receipts || '').split(',').filter((r) => r.length);
let receiptsAsked = 0;

function sendReceipt(session, submit, id) {
  const plan = receipts[receiptsAsked++];
  if (!plan || plan === '-') return;
  const [stat, ms] = plan.split('@');
  setTimeout(() => {
    const text = `id:${id} sub:001 dlvrd:000 submit date:2401011200 done date:2401011201 stat:${stat} err:000 text:`;
    record({ event: 'receipt', message_id: id, stat });
    session.deliver_sm({
      source_addr: submit.destination_addr,
      destination_addr: submit.source_addr,
      esm_class: 0x04,
      short_message: text,
    }, (resp) => record({ event: 'receipt_acked', message_id: id, stat, command_status: resp.command_status }));
  }, parseInt(ms || '100', 10));
}

// Keep the raw bytes: the package replaces short_message and message_payload
// by their decoded form.
const decodeFilter = smpp.PDU.prototype._filter;
smpp.PDU.prototype._filter = function (func) {
  if (func === 'decode') {
    if (Buffer.isBuffer(this.short_message)) this._raw_sm = Buffer.from(this.short_message);
    if (Buffer.isBuffer(this.message_payload)) this._raw_payload = Buffer.from(this.message_payload);
  }
  return decodeFilter.call(this, func);
};

const hex = (b) => (b ? b.toString('hex') : null);

function describe(pdu) {
  const o = { command: pdu.command, sequence_number: pdu.sequence_number };
  if (pdu.command === 'bind_transmitter' || pdu.command === 'bind_transceiver' || pdu.command === 'bind_receiver') {
    o.system_id = pdu.system_id;
    o.password_ok = pdu.password === (args.password || '');
    o.password_len = (pdu.password || '').length;
    o.system_type = pdu.system_type;
    o.interface_version = pdu.interface_version;
  }
  if (pdu.command === 'submit_sm') {
    for (const k of ['service_type', 'source_addr_ton', 'source_addr_npi', 'source_addr', 'dest_addr_ton',
      'dest_addr_npi', 'destination_addr', 'esm_class', 'registered_delivery', 'data_coding']) {
      o[k] = pdu[k];
    }
    o.short_message_hex = hex(pdu._raw_sm);
    o.message_payload_hex = hex(pdu._raw_payload);
    const sm = pdu.short_message;
    if (sm && sm.udh && sm.udh.length) o.udh_hex = hex(Buffer.concat(sm.udh));
    if (sm && typeof sm.message === 'string' && sm.message.length) o.text = sm.message;
    const mp = pdu.message_payload;
    if (mp && typeof mp.message === 'string' && mp.message.length) o.text = mp.message;
  }
  return o;
}

const opts = {};
if (args['tls-key']) {
  opts.key = fs.readFileSync(args['tls-key']);
  opts.cert = fs.readFileSync(args['tls-cert']);
}

const server = smpp.createServer(opts, (session) => {
  const id = ++sessions;
  let accepted = 0;
  record({ event: 'connect', session: id });
  session.on('error', () => {});
  session.on('close', () => record({ event: 'close', session: id }));
  session.on('pdu', (pdu) => {
    const o = describe(pdu);
    o.session = id;
    record(o);
    switch (pdu.command) {
      case 'bind_transmitter':
      case 'bind_transceiver':
      case 'bind_receiver': {
        if (args.hang === 'bind') return;
        const ok = pdu.system_id === (args['system-id'] || '') && pdu.password === (args.password || '');
        session.send(pdu.response(ok ? { system_id: 'nodesmsc' } : { command_status: smpp.ESME_RBINDFAIL }));
        if (!ok) setTimeout(() => session.close(), 50);
        return;
      }
      case 'submit_sm': {
        if (args.hang === 'submit') return;
        if (throttle > 0) {
          throttle--;
          session.send(pdu.response({ command_status: smpp.ESME_RTHROTTLED }));
          return;
        }
        if (queueFull > 0) {
          queueFull--;
          session.send(pdu.response({ command_status: smpp.ESME_RMSGQFUL }));
          return;
        }
        if (nack > 0) {
          nack--;
          session.send(new smpp.PDU('generic_nack', {
            sequence_number: pdu.sequence_number,
            command_status: smpp.ESME_RSYSERR,
          }));
          return;
        }
        const id = String(++messageId);
        session.send(pdu.response({ message_id: id }));
        accepted++;
        if (pdu.registered_delivery & 1) sendReceipt(session, pdu, id);
        if (args['drop-after'] && accepted >= num('drop-after')) {
          setTimeout(() => session.destroy(), 20);
        }
        return;
      }
      case 'enquire_link':
        session.send(pdu.response());
        return;
      case 'unbind':
        session.send(pdu.response());
        setTimeout(() => session.close(), 20);
        return;
      default:
        if (!pdu.isResponse()) session.send(pdu.response({ command_status: smpp.ESME_RINVCMDID }));
    }
  });
});

server.listen(num('port'), '127.0.0.1', () => {
  process.stdout.write(JSON.stringify({ port: server.address().port }) + '\n');
});

// The test owns this process; it also ends when the test's stdin closes,
// and after --lifetime seconds in any case.
process.stdin.on('end', () => process.exit(0));
process.stdin.resume();
if (args.lifetime) setTimeout(() => process.exit(0), num('lifetime') * 1000).unref();
