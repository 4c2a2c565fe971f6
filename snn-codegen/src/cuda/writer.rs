//! An indenting line writer for generated source.

#[derive(Default)]
pub struct Writer {
    out: String,
    depth: usize,
}

impl Writer {
    pub fn line(&mut self, s: impl AsRef<str>) {
        let s = s.as_ref();
        if s.is_empty() {
            self.out.push('\n');
        } else {
            for _ in 0..self.depth {
                self.out.push_str("    ");
            }
            self.out.push_str(s);
            self.out.push('\n');
        }
    }

    /// Writes `head {`, runs `body` one level deeper, then writes `}` (plus `tail`).
    pub fn block(&mut self, head: impl AsRef<str>, tail: &str, body: impl FnOnce(&mut Writer)) {
        let head = head.as_ref();
        self.line(if head.is_empty() {
            "{".to_string()
        } else {
            format!("{head} {{")
        });
        self.depth += 1;
        body(self);
        self.depth -= 1;
        self.line(format!("}}{tail}"));
    }

    pub fn lines(&mut self, lines: &[String]) {
        for l in lines {
            self.line(l);
        }
    }

    pub fn finish(self) -> String {
        self.out
    }
}
