// The Node.js peer for test/bench/sync_throughput.sh: the official
// Elasticsearch 8 client's bulk helper fed by a pg-query-stream over the
// same query ecp runs, as the client's documentation shows it, with the
// helper's defaults (flushBytes 5 MB, concurrency 5).
//   NODE_PATH=$tmp/node_modules node node_peer.js ES_URL PG_HOST PG_PORT QUERY INDEX
// Prints one JSON line: {"docs":N,"failed":N,"bytes":N,"ms":N}
'use strict';
const { Client } = require('@elastic/elasticsearch');
const pg = require('pg');
const QueryStream = require('pg-query-stream');

async function main() {
	const [esUrl, pgHost, pgPort, query, index] = process.argv.slice(2);
	const client = new Client({ node: esUrl });
	const db = new pg.Client({ host: pgHost, port: Number(pgPort), user: 'postgres', database: 'postgres' });
	// The client checks the product header on its first request: make that
	// check fail here, with its own message, rather than inside the helper.
	await client.info();
	await db.connect();
	const t0 = process.hrtime.bigint();
	const stream = db.query(new QueryStream(query));
	const result = await client.helpers.bulk({
		datasource: stream,
		onDocument(doc) {
			return { index: { _index: index, _id: doc.id } };
		},
	});
	const ms = Number(process.hrtime.bigint() - t0) / 1e6;
	await db.end();
	await client.close();
	console.log(JSON.stringify({ docs: result.successful, failed: result.failed, bytes: result.bytes, ms: Math.round(ms) }));
	if (result.aborted || result.failed > 0) process.exitCode = 1;
}

main().catch((e) => {
	console.error(`node peer: ${e && e.message ? e.message : e}`);
	process.exit(2);
});
