//! One fake MX session: the command loop, STARTTLS, AUTH, DATA, and the
//! script's delays, hang-ups, resets, overlong replies and silence.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use super::{MAX_MESSAGE, OVERLONG_REPLY, Received, Script, Shared, Stage};

enum ServerStream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
    /// After a failed upgrade.
    Gone,
}

impl ServerStream {
    async fn read(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
        match self {
            ServerStream::Plain(stream) => stream.read(buffer).await,
            ServerStream::Tls(stream) => stream.read(buffer).await,
            ServerStream::Gone => Ok(0),
        }
    }

    async fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match self {
            ServerStream::Plain(stream) => stream.write_all(bytes).await,
            ServerStream::Tls(stream) => {
                stream.write_all(bytes).await?;
                stream.flush().await
            }
            ServerStream::Gone => Err(std::io::ErrorKind::NotConnected.into()),
        }
    }

    fn is_tls(&self) -> bool {
        matches!(self, ServerStream::Tls(_))
    }

    /// Makes the close that follows send a TCP reset instead of a FIN.
    fn reset_on_close(&self) {
        let tcp = match self {
            ServerStream::Plain(stream) => stream,
            ServerStream::Tls(stream) => stream.get_ref().0,
            ServerStream::Gone => return,
        };
        let _ = tcp.set_zero_linger();
    }
}

pub(super) struct Session {
    stream: ServerStream,
    /// Received bytes; those before `start` are consumed.
    input: Vec<u8>,
    start: usize,
    script: Arc<Script>,
    acceptor: Option<TlsAcceptor>,
    shared: Arc<Shared>,
    number: usize,
    helo: String,
    auth_user: Option<String>,
    mail_from: Option<String>,
    rcpt_to: Vec<String>,
}

/// Why a session ends early; the connection is simply dropped.
struct Hangup;

type Step = Result<(), Hangup>;

impl Session {
    pub(super) fn new(
        stream: TcpStream,
        script: Arc<Script>,
        acceptor: Option<TlsAcceptor>,
        shared: Arc<Shared>,
        number: usize,
    ) -> Session {
        Session {
            stream: ServerStream::Plain(stream),
            input: Vec::new(),
            start: 0,
            script,
            acceptor,
            shared,
            number,
            helo: String::new(),
            auth_user: None,
            mail_from: None,
            rcpt_to: Vec::new(),
        }
    }

    pub(super) async fn run(mut self) {
        let shared = self.shared.clone();
        let _ = self.dialogue().await;
        shared.update(|state| state.active -= 1);
    }

    async fn dialogue(&mut self) -> Step {
        if self.script.implicit_tls {
            self.upgrade().await?;
        }
        let greeting = self.script.greeting.clone();
        self.reply_at(Stage::Greeting, &greeting).await?;
        if !greeting.starts_with('2') {
            return Ok(());
        }
        loop {
            let line = self.command_line().await?;
            let verb = line
                .split(' ')
                .next()
                .unwrap_or_default()
                .to_ascii_uppercase();
            let argument = line.get(verb.len()..).unwrap_or_default().trim().to_owned();
            match verb.as_str() {
                "EHLO" => self.ehlo(argument).await?,
                "HELO" => {
                    self.helo = argument;
                    self.reset();
                    self.reply_at(Stage::Ehlo, "250 mx.test").await?;
                }
                "STARTTLS" => self.starttls().await?,
                "AUTH" => self.auth(&argument).await?,
                "MAIL" => self.mail(line).await?,
                "RCPT" => self.rcpt(line).await?,
                "DATA" => self.data().await?,
                "RSET" => {
                    self.reset();
                    self.reply("250 2.0.0 Ok").await?;
                }
                "NOOP" => self.reply("250 2.0.0 Ok").await?,
                "QUIT" => {
                    self.reply("221 2.0.0 Bye").await?;
                    return Ok(());
                }
                _ => {
                    self.reply("502 5.5.2 Error: command not recognized")
                        .await?
                }
            }
        }
    }

    fn offers_starttls(&self) -> bool {
        (self.script.tls.is_some() || self.script.broken_tls)
            && !self.script.implicit_tls
            && !self.stream.is_tls()
    }

    async fn ehlo(&mut self, argument: String) -> Step {
        if self.script.reject_ehlo {
            return self
                .reply_at(Stage::Ehlo, "502 5.5.2 Error: command not recognized")
                .await;
        }
        self.helo = argument;
        self.reset();
        let mut lines = vec!["mx.test".to_owned()];
        lines.extend(self.script.extensions.iter().cloned());
        if self.offers_starttls() {
            lines.push("STARTTLS".to_owned());
        }
        let lists_auth = lines.iter().any(|line| line.starts_with("AUTH"));
        if self.script.auth.is_some() && !lists_auth {
            lines.push("AUTH PLAIN LOGIN".to_owned());
        }
        let last = lines.len() - 1;
        let reply: Vec<String> = lines
            .iter()
            .enumerate()
            .map(|(index, line)| format!("250{}{line}", if index == last { ' ' } else { '-' }))
            .collect();
        self.reply_at(Stage::Ehlo, &reply.join("\r\n")).await
    }

    async fn starttls(&mut self) -> Step {
        if !self.offers_starttls() {
            return self.reply("454 4.7.0 TLS not available").await;
        }
        self.reply("220 2.0.0 Ready to start TLS").await?;
        if self.script.broken_tls {
            // Garbage only once the ClientHello is here, so the client sees
            // it as a failed handshake, never as data sent after the 220.
            let mut hello = vec![0; 4096];
            let _ = self.stream.read(&mut hello).await;
            let _ = self
                .stream
                .write_all(b"this is not a TLS handshake\r\n")
                .await;
            return Err(Hangup);
        }
        self.upgrade().await?;
        self.helo.clear();
        self.auth_user = None;
        self.reset();
        Ok(())
    }

    async fn upgrade(&mut self) -> Step {
        let acceptor = self.acceptor.clone().ok_or(Hangup)?;
        let ServerStream::Plain(tcp) = std::mem::replace(&mut self.stream, ServerStream::Gone)
        else {
            return Err(Hangup);
        };
        // Bytes pipelined after STARTTLS are discarded (RFC 3207 §4.2).
        self.input.clear();
        self.start = 0;
        let stream = acceptor.accept(tcp).await.map_err(|_| Hangup)?;
        self.stream = ServerStream::Tls(Box::new(stream));
        Ok(())
    }

    async fn auth(&mut self, argument: &str) -> Step {
        let Some((username, password)) = self.script.auth.clone() else {
            return self
                .reply("503 5.5.1 Error: authentication not enabled")
                .await;
        };
        let mut words = argument.split_whitespace();
        let mechanism = words.next().unwrap_or_default().to_ascii_uppercase();
        let initial = words.next().map(str::to_owned);
        let given = match mechanism.as_str() {
            "PLAIN" => {
                let token = match initial {
                    Some(token) => token,
                    None => {
                        self.reply("334 ").await?;
                        self.command_line().await?
                    }
                };
                let decoded = BASE64.decode(token.trim()).unwrap_or_default();
                let parts: Vec<&[u8]> = decoded.split(|&byte| byte == 0).collect();
                match parts.as_slice() {
                    [_, user, pass] => Some((
                        String::from_utf8_lossy(user).into_owned(),
                        String::from_utf8_lossy(pass).into_owned(),
                    )),
                    _ => None,
                }
            }
            "LOGIN" => {
                self.reply("334 VXNlcm5hbWU6").await?;
                let user = self.command_line().await?;
                self.reply("334 UGFzc3dvcmQ6").await?;
                let pass = self.command_line().await?;
                let decode = |text: &str| {
                    String::from_utf8_lossy(&BASE64.decode(text.trim()).unwrap_or_default())
                        .into_owned()
                };
                Some((decode(&user), decode(&pass)))
            }
            _ => {
                return self
                    .reply("504 5.5.4 Unrecognized authentication type")
                    .await;
            }
        };
        if given == Some((username.clone(), password)) {
            self.auth_user = Some(username);
            self.reply("235 2.7.0 Authentication successful").await
        } else {
            self.reply("535 5.7.8 Error: authentication failed").await
        }
    }

    async fn mail(&mut self, line: String) -> Step {
        if self.script.auth.is_some() && self.auth_user.is_none() {
            return self.reply("530 5.7.0 Authentication required").await;
        }
        self.reset();
        self.mail_from = Some(line);
        self.shared
            .update(|state| state.mail_times.push(std::time::Instant::now()));
        self.reply_at(Stage::Mail, "250 2.1.0 Ok").await
    }

    async fn rcpt(&mut self, line: String) -> Step {
        if self.mail_from.is_none() {
            return self.reply("503 5.5.1 Error: need MAIL command").await;
        }
        let address = line
            .split_once('<')
            .and_then(|(_, rest)| rest.split_once('>'))
            .map(|(address, _)| address.to_owned())
            .unwrap_or_default();
        let reply = (self.script.rcpt_reply)(&address);
        if reply.starts_with('2') {
            self.rcpt_to.push(line);
        }
        self.reply_at(Stage::Rcpt, &reply).await
    }

    async fn data(&mut self) -> Step {
        if self.mail_from.is_none() || self.rcpt_to.is_empty() {
            return self.reply("554 5.5.1 Error: no valid recipients").await;
        }
        if self.script.never_answer_data {
            // Stay silent until the client gives up and closes.
            let mut sink = vec![0; 8192];
            while self.stream.read(&mut sink).await.map_err(|_| Hangup)? > 0 {}
            return Err(Hangup);
        }
        let data_reply = self.script.data_reply.clone();
        self.reply_at(Stage::Data, &data_reply).await?;
        if !data_reply.starts_with("354") {
            return Ok(());
        }
        let mut data = Vec::new();
        let mut too_long = false;
        loop {
            let line = self.raw_line().await?;
            if self.script.reset_in_data {
                self.stream.reset_on_close();
                return Err(Hangup);
            }
            if line == b".\r\n" {
                break;
            }
            let content = line.strip_suffix(b"\r\n").unwrap_or(&line).len();
            too_long |= self.script.max_line_length.is_some_and(|max| content > max);
            let line = line.strip_prefix(b".").unwrap_or(&line);
            if data.len() + line.len() > MAX_MESSAGE {
                return Err(Hangup);
            }
            data.extend_from_slice(line);
        }
        if too_long {
            self.reset();
            return self.reply("500 5.5.0 Line too long").await;
        }
        let index = self.shared.update(|state| {
            state.final_dots += 1;
            state.final_dots - 1
        });
        let reply = (self.script.final_reply)(index);
        if reply.starts_with('2') {
            let received = Received {
                helo: self.helo.clone(),
                mail_from: self.mail_from.clone().unwrap_or_default(),
                rcpt_to: self.rcpt_to.clone(),
                data,
                tls: self.stream.is_tls(),
                auth_user: self.auth_user.clone(),
                session: self.number,
            };
            self.reply_at(Stage::FinalDot, &reply).await?;
            self.shared.update(|state| state.messages.push(received));
        } else {
            self.reply_at(Stage::FinalDot, &reply).await?;
        }
        self.reset();
        Ok(())
    }

    fn reset(&mut self) {
        self.mail_from = None;
        self.rcpt_to.clear();
    }

    /// Applies the script's delay and disconnect for `stage`, then replies.
    async fn reply_at(&mut self, stage: Stage, reply: &str) -> Step {
        let delay: Duration = self
            .script
            .delay_before
            .iter()
            .filter(|(at, _)| *at == stage)
            .map(|(_, delay)| *delay)
            .sum();
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        if self.script.disconnect_at == Some(stage) {
            return Err(Hangup);
        }
        if self.script.overlong_reply_at == Some(stage) {
            let code = reply.get(..3).unwrap_or("250");
            let line = format!("{code} {}", "x".repeat(OVERLONG_REPLY));
            return self.reply(&line).await;
        }
        self.reply(reply).await
    }

    /// Sends `reply`; after a 421 the session ends, as RFC 5321 §3.8 has a
    /// server close the connection once it said so.
    async fn reply(&mut self, reply: &str) -> Step {
        let wire = format!("{reply}\r\n");
        self.stream
            .write_all(wire.as_bytes())
            .await
            .map_err(|_| Hangup)?;
        if reply.starts_with("421") {
            return Err(Hangup);
        }
        Ok(())
    }

    /// The next command line without its CRLF, recorded; counts a command
    /// batch for every socket read that completes at least one line.
    async fn command_line(&mut self) -> Result<String, Hangup> {
        let line = match self.script.idle_close {
            None => self.next_line(true).await?,
            Some(limit) => match tokio::time::timeout(limit, self.next_line(true)).await {
                Ok(line) => line?,
                Err(_) => {
                    let _ = self
                        .reply("421 4.4.2 mx.test Error: timeout exceeded")
                        .await;
                    return Err(Hangup);
                }
            },
        };
        let line = String::from_utf8_lossy(&line)
            .trim_end_matches(['\r', '\n'])
            .to_owned();
        self.shared
            .update(|state| state.commands.push(line.clone()));
        Ok(line)
    }

    /// The next content line with its line end.
    async fn raw_line(&mut self) -> Result<Vec<u8>, Hangup> {
        self.next_line(false).await
    }

    async fn next_line(&mut self, counts_as_command: bool) -> Result<Vec<u8>, Hangup> {
        loop {
            if let Some(offset) = memchr::memchr(b'\n', &self.input[self.start..]) {
                let end = self.start + offset + 1;
                let line = self.input[self.start..end].to_vec();
                self.start = end;
                if self.start > 64 * 1024 && self.start * 2 > self.input.len() {
                    self.input.drain(..self.start);
                    self.start = 0;
                }
                return Ok(line);
            }
            if self.input.len() - self.start > MAX_MESSAGE {
                return Err(Hangup);
            }
            let mut chunk = vec![0; 64 * 1024];
            let read = self.stream.read(&mut chunk).await.map_err(|_| Hangup)?;
            if read == 0 {
                return Err(Hangup);
            }
            if counts_as_command && chunk[..read].contains(&b'\n') {
                self.shared.update(|state| state.command_batches += 1);
            }
            self.input.extend_from_slice(&chunk[..read]);
        }
    }
}
