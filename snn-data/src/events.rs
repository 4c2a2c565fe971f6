//! Event-camera data as the file readers produce it and frame integration consumes it.
//!
//! An [`EventStream`] can only be built through its checked constructors, so code that
//! integrates events into frames may index a `width x height` grid with `x` and `y`
//! directly and may rely on timestamps never going backwards.

use thiserror::Error;

/// One address event: a pixel whose brightness changed at time `t`.
///
/// Coordinates are zero-based with `(0, 0)` the first pixel of the sensor as the file
/// stores it (no flipping), so frames match those of SpikingJelly and Tonic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Event {
    /// Timestamp in microseconds, on the recording's own clock (not shifted to zero).
    pub t: u64,
    /// Column, `0..width`.
    pub x: u16,
    /// Row, `0..height`.
    pub y: u16,
    /// Polarity: `true` for an ON (brightness increase) event, `false` for OFF.
    pub p: bool,
}

/// Why a sequence of events cannot form an [`EventStream`]; file readers wrap it in
/// [`DataError::Events`](crate::DataError::Events) together with the file's path.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum EventError {
    /// A coordinate lies outside the sensor: the data is corrupt or from another sensor.
    #[error(
        "event {index} at (x {x}, y {y}) lies outside the {width}x{height} sensor \
         (x must be below {width}, y below {height})"
    )]
    OutOfRange {
        /// Position of the event in the file (counting every decoded event from zero).
        index: usize,
        /// The event's column.
        x: u16,
        /// The event's row.
        y: u16,
        /// Sensor width.
        width: u16,
        /// Sensor height.
        height: u16,
    },
    /// A timestamp is earlier than the one before it.
    #[error("event {index} has timestamp {t} us, earlier than the previous event's {previous} us")]
    OutOfOrder {
        /// Position of the event in the file.
        index: usize,
        /// Its timestamp.
        t: u64,
        /// The previous event's timestamp.
        previous: u64,
    },
}

/// The events of one sample on a `width x height` sensor, in non-decreasing time order.
///
/// The invariants (every event inside the sensor, time never decreasing) are checked once
/// here so that consumers need no bounds checks of their own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventStream {
    width: u16,
    height: u16,
    events: Vec<Event>,
}

impl EventStream {
    /// Checks that every event lies on the sensor and that timestamps never decrease.
    ///
    /// Use this for formats whose files are written in time order, where a decreasing
    /// timestamp means corruption worth reporting.
    pub fn new(width: u16, height: u16, events: Vec<Event>) -> Result<Self, EventError> {
        check_range(width, height, &events)?;
        let mut previous = 0;
        for (index, e) in events.iter().enumerate() {
            if e.t < previous {
                return Err(EventError::OutOfOrder {
                    index,
                    t: e.t,
                    previous,
                });
            }
            previous = e.t;
        }
        Ok(Self {
            width,
            height,
            events,
        })
    }

    /// Checks the sensor range and sorts by timestamp (stably, so events of the same
    /// microsecond keep their file order).
    ///
    /// Use this for recordings assembled from several packets, where small reorderings are
    /// a property of the recorder rather than damage; already-sorted input costs one pass.
    pub fn new_sorted(width: u16, height: u16, mut events: Vec<Event>) -> Result<Self, EventError> {
        check_range(width, height, &events)?;
        if !events.is_sorted_by_key(|e| e.t) {
            events.sort_by_key(|e| e.t);
        }
        Ok(Self {
            width,
            height,
            events,
        })
    }

    /// Sensor width in pixels: the exclusive bound of every event's `x`.
    pub fn width(&self) -> u16 {
        self.width
    }

    /// Sensor height in pixels: the exclusive bound of every event's `y`.
    pub fn height(&self) -> u16 {
        self.height
    }

    /// The events, in non-decreasing time order.
    pub fn events(&self) -> &[Event] {
        &self.events
    }

    /// Number of events.
    pub fn len(&self) -> usize {
        self.events.len()
    }

    /// Whether the sample holds no event at all (possible for a very short gesture cut).
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// First and last timestamps, the span that "split by time" divides; `None` when empty.
    pub fn time_span(&self) -> Option<(u64, u64)> {
        Some((self.events.first()?.t, self.events.last()?.t))
    }

    /// The events with `start <= t < end`, on the same sensor: how a labelled span of a
    /// longer recording becomes a sample.
    pub fn between(&self, start: u64, end: u64) -> EventStream {
        let from = self.events.partition_point(|e| e.t < start);
        let to = self.events.partition_point(|e| e.t < end).max(from);
        EventStream {
            width: self.width,
            height: self.height,
            events: self.events[from..to].to_vec(),
        }
    }

    /// Gives the events back without copying them.
    pub fn into_events(self) -> Vec<Event> {
        self.events
    }
}

fn check_range(width: u16, height: u16, events: &[Event]) -> Result<(), EventError> {
    match events.iter().position(|e| e.x >= width || e.y >= height) {
        None => Ok(()),
        Some(index) => Err(EventError::OutOfRange {
            index,
            x: events[index].x,
            y: events[index].y,
            width,
            height,
        }),
    }
}
