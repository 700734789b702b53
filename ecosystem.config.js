// pm2 process file: `pm2 start ecosystem.config.js` (settings come from .env or VOICE_VALIDATOR_* variables).
module.exports = {
  apps: [
    {
      name: "voice-validator",
      script: "neurons/validator.py",
      interpreter: ".venv/bin/python",
      // `run` refuses to start without an explicit chain: never drop --chain bittensor.
      args: "--chain bittensor --log-format json",
      cwd: __dirname,
      autorestart: true,
      // The validator stops its tasks, containers and judge on SIGTERM; give it time before SIGKILL.
      kill_timeout: 60000,
      restart_delay: 10000,
      max_memory_restart: "8G",
      env: { PYTHONUNBUFFERED: "1" },
    },
  ],
};
