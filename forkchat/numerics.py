"""Numeric replies: every code and its fixed text, in one table.

Codes and texts follow RFC 2812 section 5 and the modern client protocol
document.  Handlers raise `Reply` for expected failures; one edge catches
it and formats it with `reply()`.  No numeric string literal belongs
anywhere else.
"""

from __future__ import annotations

from forkchat import protocol

RPL_WELCOME = "001"
RPL_YOURHOST = "002"
RPL_CREATED = "003"
RPL_MYINFO = "004"
RPL_ISUPPORT = "005"
RPL_UMODEIS = "221"
RPL_STATSUPTIME = "242"
RPL_STATSCOMMANDS = "212"
RPL_ENDOFSTATS = "219"
RPL_STATSDEBUG = "249"
RPL_LUSERCLIENT = "251"
RPL_LUSEROP = "252"
RPL_LUSERUNKNOWN = "253"
RPL_LUSERCHANNELS = "254"
RPL_LUSERME = "255"
RPL_ADMINME = "256"
RPL_ADMINLOC1 = "257"
RPL_ADMINLOC2 = "258"
RPL_ADMINEMAIL = "259"
RPL_TRYAGAIN = "263"
RPL_LOCALUSERS = "265"
RPL_GLOBALUSERS = "266"
RPL_AWAY = "301"
RPL_USERHOST = "302"
RPL_ISON = "303"
RPL_UNAWAY = "305"
RPL_NOWAWAY = "306"
RPL_WHOISUSER = "311"
RPL_WHOISSERVER = "312"
RPL_WHOISOPERATOR = "313"
RPL_WHOWASUSER = "314"
RPL_ENDOFWHO = "315"
RPL_WHOISIDLE = "317"
RPL_ENDOFWHOIS = "318"
RPL_WHOISCHANNELS = "319"
RPL_LISTSTART = "321"
RPL_LIST = "322"
RPL_LISTEND = "323"
RPL_CHANNELMODEIS = "324"
RPL_CREATIONTIME = "329"
RPL_NOTOPIC = "331"
RPL_TOPIC = "332"
RPL_TOPICWHOTIME = "333"
RPL_INVITING = "341"
RPL_VERSION = "351"
RPL_WHOREPLY = "352"
RPL_NAMREPLY = "353"
RPL_ENDOFNAMES = "366"
RPL_BANLIST = "367"
RPL_ENDOFBANLIST = "368"
RPL_LINKS = "364"
RPL_ENDOFLINKS = "365"
RPL_ENDOFWHOWAS = "369"
RPL_INFO = "371"
RPL_MOTD = "372"
RPL_ENDOFINFO = "374"
RPL_MOTDSTART = "375"
RPL_ENDOFMOTD = "376"
RPL_YOUREOPER = "381"
RPL_TIME = "391"

ERR_NOSUCHNICK = "401"
ERR_NOSUCHSERVER = "402"
ERR_NOSUCHCHANNEL = "403"
ERR_CANNOTSENDTOCHAN = "404"
ERR_TOOMANYCHANNELS = "405"
ERR_WASNOSUCHNICK = "406"
ERR_TOOMANYTARGETS = "407"
ERR_NOORIGIN = "409"
ERR_NORECIPIENT = "411"
ERR_NOTEXTTOSEND = "412"
ERR_INPUTTOOLONG = "417"
ERR_UNKNOWNCOMMAND = "421"
ERR_NOMOTD = "422"
ERR_NONICKNAMEGIVEN = "431"
ERR_ERRONEUSNICKNAME = "432"
ERR_NICKNAMEINUSE = "433"
ERR_BANNICKCHANGE = "435"       # charybdis's number (ircu's is 437, RFC 2812's ERR_UNAVAILRESOURCE)
ERR_NICKTOOFAST = "438"
ERR_USERNOTINCHANNEL = "441"
ERR_NOTONCHANNEL = "442"
ERR_USERONCHANNEL = "443"
ERR_SUMMONDISABLED = "445"
ERR_USERSDISABLED = "446"
ERR_NOTREGISTERED = "451"
ERR_NEEDMOREPARAMS = "461"
ERR_ALREADYREGISTERED = "462"
ERR_PASSWDMISMATCH = "464"
ERR_CHANNELISFULL = "471"
ERR_UNKNOWNMODE = "472"
ERR_INVITEONLYCHAN = "473"
ERR_BANNEDFROMCHAN = "474"
ERR_BADCHANNELKEY = "475"
ERR_BADCHANMASK = "476"
ERR_BANLISTFULL = "478"
ERR_NOPRIVILEGES = "481"
ERR_CANTKILLSERVER = "483"
ERR_CHANOPRIVSNEEDED = "482"
ERR_NOOPERHOST = "491"
ERR_UMODEUNKNOWNFLAG = "501"
ERR_USERSDONTMATCH = "502"
ERR_INVALIDKEY = "525"
ERR_INVALIDMODEPARAM = "696"

TEXTS: dict[str, str] = {
    RPL_LUSERUNKNOWN: "unknown connection(s)",
    RPL_LUSEROP: "operator(s) online",
    RPL_LUSERCHANNELS: "channels formed",
    RPL_ISUPPORT: "are supported by this server",
    RPL_ADMINME: "Administrative info",
    RPL_TRYAGAIN: "Please wait a while and try again.",
    RPL_UNAWAY: "You are no longer marked as being away",
    RPL_NOWAWAY: "You have been marked as being away",
    RPL_WHOISOPERATOR: "is an IRC operator",
    RPL_ENDOFWHO: "End of WHO list",
    RPL_WHOISIDLE: "seconds idle, signon time",
    RPL_ENDOFWHOIS: "End of /WHOIS list",
    RPL_LISTEND: "End of /LIST",
    RPL_NOTOPIC: "No topic is set",
    RPL_ENDOFNAMES: "End of /NAMES list",
    RPL_ENDOFBANLIST: "End of channel ban list",
    RPL_ENDOFLINKS: "End of LINKS list",
    RPL_ENDOFWHOWAS: "End of WHOWAS",
    RPL_ENDOFINFO: "End of /INFO list",
    RPL_ENDOFMOTD: "End of /MOTD command",
    RPL_YOUREOPER: "You are now an IRC operator",
    RPL_ENDOFSTATS: "End of /STATS report",
    ERR_NOSUCHNICK: "No such nick/channel",
    ERR_NOSUCHSERVER: "No such server",
    ERR_NOSUCHCHANNEL: "No such channel",
    ERR_CANNOTSENDTOCHAN: "Cannot send to channel",
    ERR_TOOMANYCHANNELS: "You have joined too many channels",
    ERR_WASNOSUCHNICK: "There was no such nickname",
    ERR_TOOMANYTARGETS: "Too many recipients",
    ERR_NOORIGIN: "No origin specified",
    ERR_NORECIPIENT: "No recipient given",
    ERR_NOTEXTTOSEND: "No text to send",
    ERR_INPUTTOOLONG: "Input line was too long",
    ERR_UNKNOWNCOMMAND: "Unknown command",
    ERR_NOMOTD: "MOTD File is missing",
    ERR_NONICKNAMEGIVEN: "No nickname given",
    ERR_ERRONEUSNICKNAME: "Erroneous nickname",
    ERR_NICKNAMEINUSE: "Nickname is already in use",
    ERR_BANNICKCHANGE: "Cannot change nickname while banned on channel",
    ERR_USERNOTINCHANNEL: "They aren't on that channel",
    ERR_NOTONCHANNEL: "You're not on that channel",
    ERR_SUMMONDISABLED: "SUMMON has been disabled",
    ERR_USERSDISABLED: "USERS has been disabled",
    ERR_USERONCHANNEL: "is already on channel",
    ERR_NOTREGISTERED: "You have not registered",
    ERR_NEEDMOREPARAMS: "Not enough parameters",
    ERR_ALREADYREGISTERED: "You may not reregister",
    ERR_PASSWDMISMATCH: "Password incorrect",
    ERR_CHANNELISFULL: "Cannot join channel (+l)",
    ERR_UNKNOWNMODE: "is unknown mode char to me",
    ERR_INVITEONLYCHAN: "Cannot join channel (+i)",
    ERR_BANNEDFROMCHAN: "Cannot join channel (+b)",
    ERR_BADCHANNELKEY: "Cannot join channel (+k)",
    ERR_BADCHANMASK: "Bad Channel Mask",
    ERR_BANLISTFULL: "Channel ban list is full",
    ERR_NOPRIVILEGES: "Permission Denied- You're not an IRC operator",
    ERR_CANTKILLSERVER: "You can't kill a server!",
    ERR_CHANOPRIVSNEEDED: "You're not channel operator",
    ERR_NOOPERHOST: "No O-lines for your host",
    ERR_UMODEUNKNOWNFLAG: "Unknown MODE flag",
    ERR_USERSDONTMATCH: "Cant change mode for other users",
    ERR_INVALIDKEY: "Key is not well-formed",
    ERR_INVALIDMODEPARAM: "Invalid mode parameter",
}


class Reply(Exception):
    """An expected failure of a command, carried to the edge that formats it.

    `params` are the middle parameters after the target (the client's nick);
    the fixed text from TEXTS is appended unless `text` is given.
    """

    def __init__(self, code: str, *params: str, text: str | None = None) -> None:
        super().__init__(code, *params)
        self.code = code
        self.params = params
        self.text = text


def reply(server: str, code: str, target: str, *params: str,
          text: str | None = None) -> bytes:
    """Format a numeric: `:server CODE target params... :text`.

    Without `text`, the code's fixed text from TEXTS ends the line when it
    has one; otherwise the last of `params` is the trailing parameter.  A
    text always goes after ' :', even one word (ADMIN's `257 me :network`),
    as the broker's numerics do: some clients find texts by ' :' alone.
    """
    if text is None:
        text = TEXTS.get(code)
    if text is None:
        return protocol.format_line(server, code, target or "*", *params)
    return protocol.format_line(server, code, target or "*", *params, text, text=True)


def from_error(server: str, target: str, error: Reply) -> bytes:
    return reply(server, error.code, target, *error.params, text=error.text)
