//! `osb-gateway secret ...`: keys, encrypted passwords, password hashes
//! and admin tokens for the configuration files. Needs no gateway.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;
use osb_gateway::config::credentials::{hash_password, new_token, token_sha256_hex};
use osb_gateway::config::{SecretKey, SECRET_KEY_ENV};

use super::{read_stdin_secret, EX_USAGE};

#[derive(Subcommand)]
pub enum SecretCommand {
    /// Print a new random key for enc:v1: values (store it in
    /// OSB_GATEWAY_SECRET_KEY or the file named by secrets.key_file).
    Keygen,
    /// Encrypt a broker password read from standard input into an enc:v1:
    /// value, with the key from OSB_GATEWAY_SECRET_KEY or --key-file.
    Encrypt {
        /// File holding the base64 key (else OSB_GATEWAY_SECRET_KEY).
        #[arg(long)]
        key_file: Option<PathBuf>,
    },
    /// Hash a platform password read from standard input (argon2id) for a
    /// registry's `password_hash`.
    Hash,
    /// Print a new random admin token and the SHA-256 to put in
    /// `[[admin.tokens]]` (the token itself is shown once; store it safely).
    Token,
}

/// Runs a `secret` subcommand.
pub fn run(cmd: SecretCommand) -> ExitCode {
    let result = match cmd {
        SecretCommand::Keygen => Ok(SecretKey::generate().to_base64()),
        SecretCommand::Token => {
            let token = new_token();
            Ok(format!(
                "token:  {token}\nsha256: {}",
                token_sha256_hex(&token)
            ))
        }
        SecretCommand::Hash => read_stdin_secret().map(|p| hash_password(&p)),
        SecretCommand::Encrypt { key_file } => {
            let key = match key_file {
                Some(p) => std::fs::read_to_string(&p)
                    .map_err(|e| format!("--key-file {}: {e}", p.display()))
                    .and_then(|t| SecretKey::from_base64(&t).map_err(|e| format!("--key-file {}: {e}", p.display()))),
                None => std::env::var(SECRET_KEY_ENV).ok()
                    .ok_or_else(|| format!("no key: set {SECRET_KEY_ENV} or pass --key-file (make one with `osb-gateway secret keygen`)"))
                    .and_then(|t| SecretKey::from_base64(&t).map_err(|e| format!("{SECRET_KEY_ENV}: {e}"))),
            };
            key.and_then(|k| read_stdin_secret().map(|p| k.encrypt(&p)))
        }
    };
    match result {
        Ok(out) => {
            println!("{out}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("osb-gateway: {e}");
            ExitCode::from(EX_USAGE)
        }
    }
}
