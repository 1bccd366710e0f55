// A Storage SCP with dcmjs-dimse: node storescp.js PORT OUT_DIR
// Accepts every proposed context with its first transfer syntax, writes each data set to
// OUT_DIR/<SOP Instance UID>.dcm, prints "listening" once ready.
'use strict';
const net = require('net');
const path = require('path');
const dcmjsDimse = require('dcmjs-dimse');
const { Scp } = dcmjsDimse;
const { CEchoResponse, CStoreResponse } = dcmjsDimse.responses;
const { Status, PresentationContextResult } = dcmjsDimse.constants;

const [port, outDir] = process.argv.slice(2);

class StoreScp extends Scp {
  associationRequested(association) {
    this.association = association;
    for (const c of association.getPresentationContexts()) {
      const context = association.getPresentationContext(c.id);
      context.setResult(PresentationContextResult.Accept, context.getTransferSyntaxUids()[0]);
    }
    this.sendAssociationAccept();
  }

  cEchoRequest(request, callback) {
    const response = CEchoResponse.fromRequest(request);
    response.setStatus(Status.Success);
    callback(response);
  }

  cStoreRequest(request, callback) {
    const response = CStoreResponse.fromRequest(request);
    const uid = request.getAffectedSopInstanceUid();
    if (!/^[0-9.]+$/.test(uid)) {
      response.setStatus(Status.ProcessingFailure);
      callback(response);
      return;
    }
    request.getDataset().toFile(path.join(outDir, `${uid}.dcm`), (error) => {
      response.setStatus(error ? Status.ProcessingFailure : Status.Success);
      callback(response);
    });
  }

  associationReleaseRequested() {
    this.sendAssociationReleaseResponse();
  }
}

// dcmjs-dimse's Server listens on every interface; this one listens on loopback only.
const server = net.createServer((socket) => {
  const scp = new StoreScp(socket, {});
  scp.on('networkError', (e) => {
    console.error('network error:', e.message);
    socket.end();
  });
});
server.listen(Number(port), '127.0.0.1', () => console.log('listening'));
