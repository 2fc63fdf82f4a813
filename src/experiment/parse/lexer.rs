//! The lexer: one line into words, strings and comments, with columns.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Tok<'a> {
    Word(&'a str),
    LBrace,
    RBrace,
    Eq,
}

#[derive(Debug, Clone, Copy)]
pub(super) struct Token<'a> {
    pub(super) tok: Tok<'a>,
    pub(super) col: usize,
}

impl Token<'_> {
    pub(super) fn show(&self) -> String {
        match self.tok {
            Tok::Word(w) => w.to_string(),
            Tok::LBrace => "{".into(),
            Tok::RBrace => "}".into(),
            Tok::Eq => "=".into(),
        }
    }
}

/// One line's tokens, the column just past the last one, and the line without its comment.
pub(super) struct Lexed<'a> {
    pub(super) toks: Vec<Token<'a>>,
    pub(super) end_col: usize,
    pub(super) code: &'a str,
}

fn flush<'a>(
    line: &'a str,
    word: &mut Option<(usize, usize)>,
    toks: &mut Vec<Token<'a>>,
    at: usize,
) {
    if let Some((start, col)) = word.take() {
        if let Some(w) = line.get(start..at) {
            toks.push(Token {
                tok: Tok::Word(w),
                col,
            });
        }
    }
}

pub(super) fn lex_line(line: &str) -> Lexed<'_> {
    let mut toks = Vec::new();
    let mut word: Option<(usize, usize)> = None; // (byte start, column)
    let mut end_col = 1;
    let mut code_end = line.len();
    let mut col = 0;
    for (i, ch) in line.char_indices() {
        col += 1;
        if ch == '#' {
            flush(line, &mut word, &mut toks, i);
            code_end = i;
            break;
        }
        let punct = match ch {
            '{' => Some(Tok::LBrace),
            '}' => Some(Tok::RBrace),
            '=' => Some(Tok::Eq),
            _ => None,
        };
        if ch.is_whitespace() || punct.is_some() {
            flush(line, &mut word, &mut toks, i);
            if let Some(p) = punct {
                toks.push(Token { tok: p, col });
                end_col = col + 1;
            }
        } else {
            if word.is_none() {
                word = Some((i, col));
            }
            end_col = col + 1;
        }
    }
    if code_end == line.len() {
        flush(line, &mut word, &mut toks, line.len());
    }
    Lexed {
        toks,
        end_col,
        code: line.get(..code_end).unwrap_or(line).trim(),
    }
}
