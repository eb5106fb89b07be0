//! Calls `pam_authenticate(PAM_SILENT)` up to N times on ONE PAM handle, as
//! sudo does for `passwd_tries`: `pam_retry SERVICE USER TRIES`. pamtester
//! cannot (it stops at the first failure). Prompts and messages go to
//! stdout, answers are read line by line from stdin, as pamtester's
//! conversation does, so the e2e `Login` harness can drive it. After each
//! call it prints `pam_retry: try N: success` or `pam_retry: try N: <error>`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed step panics

use std::ffi::{CStr, CString};
use std::io::{BufRead, Write};

use pam_client::{Context, ConversationHandler, ErrorCode, Flag};

struct Terminal {
    input: std::io::StdinLock<'static>,
}

impl Terminal {
    fn ask(&mut self, prompt: &CStr) -> Result<CString, ErrorCode> {
        print!("{}", prompt.to_string_lossy());
        let _ = std::io::stdout().flush();
        let mut line = String::new();
        match self.input.read_line(&mut line) {
            Ok(0) | Err(_) => Err(ErrorCode::CONV_ERR),
            Ok(_) => CString::new(line.trim_end_matches('\n')).map_err(|_| ErrorCode::CONV_ERR),
        }
    }
}

impl ConversationHandler for Terminal {
    fn prompt_echo_on(&mut self, prompt: &CStr) -> Result<CString, ErrorCode> {
        self.ask(prompt)
    }
    fn prompt_echo_off(&mut self, prompt: &CStr) -> Result<CString, ErrorCode> {
        self.ask(prompt)
    }
    fn text_info(&mut self, msg: &CStr) {
        println!("{}", msg.to_string_lossy());
    }
    fn error_msg(&mut self, msg: &CStr) {
        println!("{}", msg.to_string_lossy());
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, service, user, tries] = args.as_slice() else {
        eprintln!("usage: pam_retry SERVICE USER TRIES");
        std::process::exit(2);
    };
    let tries: u32 = tries.parse().unwrap_or(1);
    let conv = Terminal {
        input: std::io::stdin().lock(),
    };
    let mut ctx = match Context::new(service, Some(user), conv) {
        Ok(c) => c,
        Err(e) => {
            println!("pam_retry: pam_start: {e}");
            std::process::exit(1);
        }
    };
    for n in 1..=tries {
        match ctx.authenticate(Flag::SILENT) {
            Ok(()) => {
                println!("pam_retry: try {n}: success");
                return;
            }
            Err(e) => println!("pam_retry: try {n}: {:?}", e.code()),
        }
    }
    std::process::exit(1);
}
