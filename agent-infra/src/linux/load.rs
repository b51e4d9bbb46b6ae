//! Load averages from `/proc/loadavg`.

use super::parse::ParseError;

const FILE: &str = "loadavg";

/// The three load averages and the task counts.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LoadAvg {
    /// Over one minute.
    pub one: f64,
    /// Over five minutes.
    pub five: f64,
    /// Over fifteen minutes.
    pub fifteen: f64,
}

/// Parses `/proc/loadavg`: `0.52 0.58 0.59 2/467 12345`.
pub fn parse_loadavg(text: &str) -> Result<LoadAvg, ParseError> {
    let mut fields = text.split_ascii_whitespace();
    let mut next = |what: &str| -> Result<f64, ParseError> {
        let f = fields
            .next()
            .ok_or_else(|| ParseError::new(FILE, 1, format!("no {what}")))?;
        f.parse()
            .map_err(|_| ParseError::new(FILE, 1, format!("{what}: '{f}' is not a number")))
    };
    Ok(LoadAvg {
        one: next("1-minute load")?,
        five: next("5-minute load")?,
        fifteen: next("15-minute load")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_real_file() {
        let l =
            parse_loadavg(include_str!("../../tests/fixtures/vm-2cpu/loadavg")).expect("parses");
        assert!(l.one >= 0.0 && l.five >= 0.0 && l.fifteen >= 0.0);
        assert_eq!(
            parse_loadavg("0.52 1.50 12.25 2/467 12345\n"),
            Ok(LoadAvg {
                one: 0.52,
                five: 1.5,
                fifteen: 12.25
            })
        );
        assert!(parse_loadavg("x").is_err());
    }
}
