//! Aligned columns for `ls`, `search`, `files` and `library`.

/// Prints `rows` under `headers`, each column as wide as its widest cell; the columns
/// named in `right` are right-aligned (numbers).
pub fn print(headers: &[&str], right: &[usize], rows: &[Vec<String>]) {
    print!("{}", render(headers, right, rows));
}

pub fn render(headers: &[&str], right: &[usize], rows: &[Vec<String>]) -> String {
    let width = |c: &str| c.chars().count();
    let mut widths: Vec<usize> = headers.iter().map(|h| width(h)).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate().take(widths.len()) {
            widths[i] = widths[i].max(width(cell));
        }
    }
    let line = |cells: Vec<&str>| {
        let last = cells.len().saturating_sub(1);
        let mut out = String::new();
        for (i, cell) in cells.into_iter().enumerate() {
            let pad = " ".repeat(widths[i].saturating_sub(width(cell)));
            match (right.contains(&i), i == last) {
                (true, _) => out.push_str(&format!("{pad}{cell}")),
                (false, true) => out.push_str(cell),
                (false, false) => out.push_str(&format!("{cell}{pad}")),
            }
            if i != last {
                out.push_str("  ");
            }
        }
        out.push('\n');
        out
    };
    let mut out = line(headers.to_vec());
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn columns_line_up() {
        let rows = vec![
            vec!["a".to_string(), "1".to_string(), "x".to_string()],
            vec![
                "long name".to_string(),
                "12345".to_string(),
                "y".to_string(),
            ],
        ];
        let text = super::render(&["NAME", "N", "Z"], &[1], &rows);
        assert_eq!(
            text,
            "NAME           N  Z\na              1  x\nlong name  12345  y\n"
        );
    }
}
