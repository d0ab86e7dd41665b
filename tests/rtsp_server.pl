#!/usr/bin/perl
# A loopback RTSP server for the tests (tests/servers.py): Debian's RTSP::Server, plus RTP interleaved in the RTSP connection
# (RTP over TCP, RFC 2326 10.12) for players that ask for it; the library itself sends RTP over UDP only.
use strict;
use warnings;
use AnyEvent;
use RTSP::Server;

$| = 1;
my ($client_port, $source_port, $rtp_port) = @ARGV;
my %interleaved;  # connection id => { stream id => channel }

{
    no warnings 'redefine';
    my $udp_setup = \&RTSP::Server::Client::Connection::setup;
    *RTSP::Server::Client::Connection::setup = sub {
        my ($self) = @_;
        my $transport = $self->get_req_header('Transport') || '';
        my ($channel) = $transport =~ m/interleaved=(\d+)/;
        return $udp_setup->(@_) unless defined $channel;
        my ($mount, $stream_id) = $self->get_mount or return $self->not_found;
        my $stream = $mount->get_stream($stream_id || 0) or return $self->not_found;
        $interleaved{$self->id}{$stream_id || 0} = $channel;
        $stream->add_client($self);
        $self->add_resp_header('Transport', $transport);
        $self->push_ok;
    };
    my $udp_send = \&RTSP::Server::Client::Connection::send_packet;
    *RTSP::Server::Client::Connection::send_packet = sub {
        my ($self, $stream_id, $packet) = @_;
        my $channel = $interleaved{$self->id}{$stream_id};
        return $udp_send->(@_) unless defined $channel;
        my $type = ord(substr($packet, 1, 1));
        $channel++ if $type >= 200 && $type <= 204;
        $self->h->push_write(pack('aCn', '$', $channel, length $packet) . $packet) if $self->h;
        return length $packet;
    };
    # A publisher killed without TEARDOWN would leave its mount behind for good (players would PLAY a
    # silent stream, a new publisher would get 403): as media servers do, the mount goes with the
    # publisher's connection, and the newest publisher of a path takes it over.
    my %publisher;  # mount path => the source connection recording it
    my $record = \&RTSP::Server::Source::Connection::record;
    *RTSP::Server::Source::Connection::record = sub {
        my ($self) = @_;
        my $result = $record->(@_);
        my $mount = $self->get_mount;
        $publisher{$mount->path} = $self->id if $mount && $mount->mounted;
        return $result;
    };
    my $announce = \&RTSP::Server::Source::Connection::announce;
    *RTSP::Server::Source::Connection::announce = sub {
        my ($self) = @_;
        $self->unmount if $self->get_mount;
        return $announce->(@_);
    };
    *RTSP::Server::Source::Connection::DESTROY = sub {
        my ($self) = @_;
        for my $path (grep { $publisher{$_} == $self->id } keys %publisher) {
            delete $publisher{$path};
            delete $self->server->mounts->{$path} if $self->server_exists;
        }
        $self->end_rtp_server;
    };
}

my $server = RTSP::Server->new(
    log_level => $ENV{RTSP_SERVER_LOG_LEVEL} // 1,
    client_listen_port => $client_port,
    source_listen_port => $source_port,
    rtp_start_port => $rtp_port,
    client_listen_address => '127.0.0.1',
    source_listen_address => '127.0.0.1',
);
$server->listen;
print "listening\n";
AnyEvent->condvar->recv;
