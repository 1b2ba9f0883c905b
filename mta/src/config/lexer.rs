//! smtpd.conf tokens, one logical statement at a time (parse.y's `yylex`): `\` continues a
//! line, `#` comments to the end of the logical line (a newline inside `{ }` ends the
//! statement too, as in 6.8: continue it with `\`), `$name` expands a macro in unquoted words.

use std::collections::HashMap;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tok {
    /// A bare or quoted word. Only bare words can be keywords.
    Word { text: String, quoted: bool },
    /// One of `{ } , = < > !` (`=>` lexes as `=`).
    Sym(char),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    pub tok: Tok,
    pub line: usize,
    pub col: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LexError {
    pub line: usize,
    pub col: usize,
    pub message: String,
}

pub struct Lexer<'a> {
    chars: Vec<char>,
    pos: usize,
    line: usize,
    col: usize,
    _text: &'a str,
}

/// Characters that may continue a bare word (parse.y `allowed_in_string`).
fn allowed_in_string(c: char) -> bool {
    c.is_ascii_alphanumeric()
        || (c.is_ascii_punctuation()
            && !matches!(c, '(' | ')' | '{' | '}' | '<' | '>' | '!' | '=' | '#' | ','))
}

fn starts_word(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, ':' | '_' | '*' | '/')
}

impl<'a> Lexer<'a> {
    pub fn new(text: &'a str) -> Lexer<'a> {
        Lexer {
            chars: text.chars().collect(),
            pos: 0,
            line: 1,
            col: 1,
            _text: text,
        }
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += 1;
        if c == '\n' {
            self.line += 1;
            self.col = 1;
        } else {
            self.col += 1;
        }
        Some(c)
    }

    /// The next logical statement's tokens; `None` at end of input. A statement with a
    /// lexical error is consumed whole and returned as the error.
    pub fn next_statement(
        &mut self,
        macros: &HashMap<String, String>,
    ) -> Option<Result<Vec<Token>, LexError>> {
        let mut toks = Vec::new();
        let mut error: Option<LexError> = None;
        while let Some(c) = self.peek() {
            match c {
                '\n' => {
                    self.bump();
                    // 6.8's lexer ends a statement at every unescaped newline, braces or not.
                    if !toks.is_empty() || error.is_some() {
                        break;
                    }
                }
                '\\' if self.chars.get(self.pos + 1) == Some(&'\n') => {
                    self.bump();
                    self.bump();
                }
                c if c.is_whitespace() => {
                    self.bump();
                }
                '#' => {
                    // A comment runs to the end of the logical line, continuations included.
                    while let Some(c) = self.peek() {
                        if c == '\n' {
                            let continued = self.pos > 0 && self.chars[self.pos - 1] == '\\';
                            if !continued {
                                break;
                            }
                        }
                        self.bump();
                    }
                }
                '"' => {
                    let (line, col) = (self.line, self.col);
                    self.bump();
                    let mut s = String::new();
                    let mut closed = false;
                    while let Some(c) = self.peek() {
                        if c == '\n' {
                            break;
                        }
                        self.bump();
                        match c {
                            '"' => {
                                closed = true;
                                break;
                            }
                            '\\' => match self.peek() {
                                Some(n @ ('"' | '\\')) => {
                                    self.bump();
                                    s.push(n);
                                }
                                _ => s.push('\\'),
                            },
                            c => s.push(c),
                        }
                    }
                    if !closed {
                        error.get_or_insert(LexError {
                            line,
                            col,
                            message: "unterminated quoted string".into(),
                        });
                    }
                    toks.push(Token {
                        tok: Tok::Word {
                            text: s,
                            quoted: true,
                        },
                        line,
                        col,
                    });
                }
                '{' | '}' | ',' | '<' | '>' | '!' | '=' => {
                    let (line, col) = (self.line, self.col);
                    self.bump();
                    if c == '=' && self.peek() == Some('>') {
                        self.bump();
                    }
                    toks.push(Token {
                        tok: Tok::Sym(c),
                        line,
                        col,
                    });
                }
                '$' => {
                    let (line, col) = (self.line, self.col);
                    self.bump();
                    let mut name = String::new();
                    while let Some(c) = self
                        .peek()
                        .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
                    {
                        self.bump();
                        name.push(c);
                    }
                    match macros.get(&name) {
                        // The value is lexed again, so a macro may hold several words.
                        Some(value) => match Lexer::new(value).next_statement(&HashMap::new()) {
                            Some(Ok(inner)) => {
                                toks.extend(inner.into_iter().map(|t| Token { line, col, ..t }))
                            }
                            Some(Err(e)) => {
                                error.get_or_insert(LexError {
                                    line,
                                    col,
                                    message: format!("macro ${name}: {}", e.message),
                                });
                            }
                            None => {}
                        },
                        None => {
                            error.get_or_insert(LexError {
                                line,
                                col,
                                message: format!("macro '{name}' not defined"),
                            });
                        }
                    }
                }
                c if starts_word(c) => {
                    let (line, col) = (self.line, self.col);
                    let mut s = String::new();
                    while let Some(c) = self.peek().filter(|c| allowed_in_string(*c)) {
                        self.bump();
                        s.push(c);
                    }
                    toks.push(Token {
                        tok: Tok::Word {
                            text: s,
                            quoted: false,
                        },
                        line,
                        col,
                    });
                }
                other => {
                    let (line, col) = (self.line, self.col);
                    self.bump();
                    error.get_or_insert(LexError {
                        line,
                        col,
                        message: format!("unexpected character '{other}': quote this value"),
                    });
                }
            }
        }
        match (error, toks.is_empty()) {
            (Some(e), _) => Some(Err(e)),
            (None, true) => None,
            (None, false) => Some(Ok(toks)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(text: &str) -> Vec<Vec<String>> {
        let mut lx = Lexer::new(text);
        let mut out = Vec::new();
        let mut macros = HashMap::new();
        macros.insert(
            "lan".to_owned(),
            "{ 10.0.0.0/8, 192.168.0.0/16 }".to_owned(),
        );
        while let Some(st) = lx.next_statement(&macros) {
            out.push(
                st.unwrap()
                    .into_iter()
                    .map(|t| match t.tok {
                        Tok::Word { text, quoted: true } => format!("\"{text}\""),
                        Tok::Word { text, .. } => text,
                        Tok::Sym(c) => c.to_string(),
                    })
                    .collect(),
            );
        }
        out
    }

    #[test]
    fn continuation_comment_braces_and_macros() {
        let w = words(
            "listen on lo \\\n  port 25 # comment\n\ntable t { \\\n a => b, \\\n c = d \\\n}\nmatch from src $lan action \"x\"\n",
        );
        assert_eq!(w[0], ["listen", "on", "lo", "port", "25"]);
        assert_eq!(
            w[1],
            ["table", "t", "{", "a", "=", "b", ",", "c", "=", "d", "}"]
        );
        assert_eq!(
            w[2],
            [
                "match",
                "from",
                "src",
                "{",
                "10.0.0.0/8",
                ",",
                "192.168.0.0/16",
                "}",
                "action",
                "\"x\""
            ]
        );
    }

    #[test]
    fn undefined_macro_and_stray_character_are_errors_with_columns() {
        let mut lx = Lexer::new("action x maildir ~/Maildir\nmatch $nope\n");
        let e = lx.next_statement(&HashMap::new()).unwrap().unwrap_err();
        assert_eq!((e.line, e.col), (1, 18));
        let e = lx.next_statement(&HashMap::new()).unwrap().unwrap_err();
        assert_eq!(
            (e.line, e.message.as_str()),
            (2, "macro 'nope' not defined")
        );
    }
}
