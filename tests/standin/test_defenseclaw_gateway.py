"""The DefenseClaw stand-in (vm-tests/guest/defenseclaw-gateway) reads what
the real gateway reads and nothing else. Loopback only: every listener is on
127.0.0.x with a port picked free just before.

    python3 -m unittest discover -s tests/standin -v
"""
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
STANDIN = os.path.join(HERE, "..", "..", "vm-tests", "guest", "defenseclaw-gateway")
TOKEN = "standin-test-token-1f0c"


def free_port(host):
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def health(host, port):
    with urllib.request.urlopen("http://%s:%d/health" % (host, port), timeout=2) as r:
        return r.status, json.loads(r.read().decode())


def refused(host, port):
    try:
        socket.create_connection((host, port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    return False


class StandIn(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.home = self.tmp.name
        self.procs = []

    def tearDown(self):
        for p in self.procs:
            p.kill()
            p.communicate()
        self.tmp.cleanup()

    def env(self, **extra):
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": self.home}
        env.update(extra)
        return env

    def write(self, rel, text):
        path = os.path.join(self.home, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(text)
        return path

    def run_to_end(self, env):
        return subprocess.run([sys.executable, STANDIN], env=env, capture_output=True, text=True, timeout=20)

    def start(self, env, *addrs):
        p = subprocess.Popen([sys.executable, STANDIN], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
        self.procs.append(p)
        deadline = time.time() + 15
        while time.time() < deadline:
            if p.poll() is not None:
                self.fail("the stand-in exited %s: %s" % (p.returncode, p.stderr.read()))
            if all(not refused(h, port) for h, port in addrs):
                return p
            time.sleep(0.05)
        self.fail("the stand-in did not listen on %s" % (addrs,))

    def sandbox_config(self, api_port, guardrail_port, host="127.0.0.3", extra=""):
        # What a sandbox setup writes for standalone mode (REAL-PRODUCTS.md).
        return (
            "# written by sandbox\n"
            "config_version: 8\n"
            "openshell:\n"
            "  mode: standalone\n"
            "  sandbox_home: /home/sandbox\n"
            "gateway:\n"
            "  host: 10.200.0.2\n"
            "  port: 18789\n"
            "  api_port: %d\n"
            "  token_env: OPENCLAW_GATEWAY_TOKEN\n"
            "guardrail:\n"
            "  host: '%s'\n"
            "  port: %d\n"
            "claw:\n"
            "  home_dir: /home/sandbox/.openclaw\n"
            "  config_file: \"/home/sandbox/.openclaw/openclaw.json\"\n%s" % (api_port, host, guardrail_port, extra)
        )

    def test_no_config_is_an_error(self):
        out = self.run_to_end(self.env())
        self.assertNotEqual(out.returncode, 0)
        self.assertIn("failed to load v8 config", out.stderr)

    def test_a_config_that_is_not_v8_is_an_error(self):
        self.write(".defenseclaw/config.yaml", "gateway:\n  api_port: 18970\n")
        out = self.run_to_end(self.env(OPENCLAW_GATEWAY_TOKEN=TOKEN))
        self.assertNotEqual(out.returncode, 0)
        self.assertIn("config_version must be 8", out.stderr)

    def test_unknown_keys_are_refused_like_the_schema(self):
        for text, key in [
            (self.sandbox_config(1, 2, extra="guardrail_check: true\n"), "guardrail_check"),
            (self.sandbox_config(1, 2).replace("  port: 18789\n", "  port: 18789\n  listen_host: x\n"), "listen_host"),
        ]:
            self.write(".defenseclaw/config.yaml", text)
            out = self.run_to_end(self.env(OPENCLAW_GATEWAY_TOKEN=TOKEN))
            self.assertNotEqual(out.returncode, 0, text)
            self.assertIn("failed to load v8 config", out.stderr)
            self.assertIn(key, out.stderr)

    def test_a_missing_token_is_an_error(self):
        self.write(".defenseclaw/config.yaml", self.sandbox_config(free_port("127.0.0.3"), free_port("127.0.0.3")))
        out = self.run_to_end(self.env())
        self.assertNotEqual(out.returncode, 0)
        self.assertIn("OPENCLAW_GATEWAY_TOKEN", out.stderr)

    def test_standalone_binds_the_guardrail_host_with_the_token_from_dotenv(self):
        api, proxy = free_port("127.0.0.3"), free_port("127.0.0.3")
        self.write(".defenseclaw/config.yaml", self.sandbox_config(api, proxy))
        self.write(".defenseclaw/.env", "# sidecar secrets\nOPENCLAW_GATEWAY_TOKEN=%s\n" % TOKEN)
        self.start(self.env(), ("127.0.0.3", api), ("127.0.0.3", proxy))
        status, body = health("127.0.0.3", api)
        self.assertEqual(status, 200)
        self.assertEqual(body["api"], "127.0.0.3:%d" % api)
        self.assertEqual(body["token_source"], "env:OPENCLAW_GATEWAY_TOKEN")
        self.assertEqual(body["openclaw"], "10.200.0.2:18789")
        self.assertEqual(health("127.0.0.3", proxy), (200, {"status": "healthy"}))
        self.assertTrue(refused("127.0.0.1", api), "the API must bind the configured host only")

    def test_api_bind_wins_and_defenseclaw_home_is_the_data_dir(self):
        api, proxy = free_port("127.0.0.2"), free_port("127.0.0.3")
        data = os.path.join(self.home, "state")
        self.write("state/config.yaml", self.sandbox_config(api, proxy).replace(
            "  token_env: OPENCLAW_GATEWAY_TOKEN\n", "  token_env: SIDECAR_TOKEN\n  api_bind: 127.0.0.2\n"))
        self.write("state/.env", 'SIDECAR_TOKEN="%s"\n' % TOKEN)
        self.start(self.env(DEFENSECLAW_HOME=data), ("127.0.0.2", api), ("127.0.0.3", proxy))
        self.assertEqual(health("127.0.0.2", api)[1]["token_source"], "env:SIDECAR_TOKEN")

    def test_defenseclaw_config_names_the_file(self):
        api, proxy = free_port("127.0.0.3"), free_port("127.0.0.3")
        path = self.write("elsewhere.yaml", self.sandbox_config(api, proxy))
        self.start(self.env(DEFENSECLAW_CONFIG=path, OPENCLAW_GATEWAY_TOKEN=TOKEN),
                   ("127.0.0.3", api), ("127.0.0.3", proxy))
        self.assertEqual(health("127.0.0.3", api)[1]["config"], path)

    def test_the_invented_variables_are_not_read(self):
        api, proxy = free_port("127.0.0.1"), free_port("127.0.0.1")
        self.write(".defenseclaw/config.yaml",
                   "config_version: 8\ngateway:\n  api_port: %d\n  token: literal\nguardrail:\n  port: %d\n"
                   % (api, proxy))
        self.start(self.env(DEFENSECLAW_LISTEN_HOST="127.0.0.9", DEFENSECLAW_GATEWAY_PORT="1",
                            DEFENSECLAW_GUARDRAIL_PORT="2", DEFENSECLAW_POLICY_DIR="/nonexistent",
                            DEFENSECLAW_SANDBOX="x"),
                   ("127.0.0.1", api), ("127.0.0.1", proxy))
        _, body = health("127.0.0.1", api)
        self.assertEqual(body["api"], "127.0.0.1:%d" % api)
        self.assertEqual(body["token_source"], "config:gateway.token")

    def test_a_json_config_is_yaml_too(self):
        api, proxy = free_port("127.0.0.3"), free_port("127.0.0.3")
        self.write(".defenseclaw/config.yaml", json.dumps({
            "config_version": 8, "openshell": {"mode": "standalone"},
            "gateway": {"api_port": api, "token_env": "OPENCLAW_GATEWAY_TOKEN"},
            "guardrail": {"host": "127.0.0.3", "port": proxy}}))
        self.start(self.env(OPENCLAW_GATEWAY_TOKEN=TOKEN), ("127.0.0.3", api), ("127.0.0.3", proxy))


if __name__ == "__main__":
    unittest.main()
