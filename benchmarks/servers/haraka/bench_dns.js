'use strict';
// Loaded with `node --require` before Haraka (benchmarks/servers/haraka_maildir.py
// --mx): every resolver of the process asks $BENCH_DNS (HOST:PORT, the run's
// private dnsmasq). The default resolvers take setServers; the plugins that
// make their own (dns-list: `new dns.promises.Resolver(...)`) get a
// subclass that does the same, since a new Resolver reads /etc/resolv.conf,
// which cannot name a port.

const dns = require('node:dns');

const servers = [process.env.BENCH_DNS];
if (servers[0]) {
    dns.setServers(servers);
    dns.promises.setServers(servers);
    for (const space of [dns, dns.promises]) {
        const Original = space.Resolver;
        space.Resolver = class BenchResolver extends Original {
            constructor(options) {
                super(options);
                this.setServers(servers);
            }
        };
    }
}
