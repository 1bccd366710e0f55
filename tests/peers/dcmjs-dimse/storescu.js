// C-STORE each file to an SCP with dcmjs-dimse: node storescu.js HOST PORT CALLED_AE FILE...
// Prints one line per file, "<status hex> <file>", and exits 0 when every status is Success.
'use strict';
const dcmjsDimse = require('dcmjs-dimse');
const { Client } = dcmjsDimse;
const { CStoreRequest } = dcmjsDimse.requests;
const { Status } = dcmjsDimse.constants;

const [host, port, calledAe, ...files] = process.argv.slice(2);
const client = new Client();
const statuses = new Map();
for (const file of files) {
  const request = new CStoreRequest(file);
  request.on('response', (response) => statuses.set(file, response.getStatus()));
  client.addRequest(request);
}
client.on('networkError', (e) => {
  console.error('network error:', e.message);
  process.exit(2);
});
client.on('closed', () => {
  let ok = true;
  for (const file of files) {
    const status = statuses.get(file);
    ok = ok && status === Status.Success;
    console.log(`${status === undefined ? 'none' : status.toString(16)} ${file}`);
  }
  process.exit(ok ? 0 : 1);
});
client.send(host, Number(port), 'DCMJSSCU', calledAe);
